"""Where the benchmarks read real Fashion-MNIST: the folder `make bench` found or provisioned
with tools/test_data.sh (TB_TEST_FASHION_MNIST, as the tests read it), else Debian's copy."""

import os
from pathlib import Path

FASHION = Path(os.environ.get("TB_TEST_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
