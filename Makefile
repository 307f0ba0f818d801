# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# The stamps depend on pyproject.toml, so a changed dependency list re-installs (a stale venv).
RUN_STAMP := $(VENV)/.tb-run-installed
DEV_STAMP := $(VENV)/.tb-dev-installed

.PHONY: demo test fuzz lint docs bench clean venv docker-check

# imaug declares both OpenCV wheels, which install the same cv2/ folder: keep only the headless
# one (uninstalling the GUI wheel deletes the shared files, so reinstall the headless files).
define keep_headless_opencv
	$(BIN)/pip uninstall -q -y opencv-python
	$(BIN)/pip install -q --no-deps --force-reinstall \
	    "opencv-python-headless==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opencv-python-headless"))')"
endef

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	$(keep_headless_opencv)
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	$(keep_headless_opencv)
	touch $@ $(RUN_STAMP)

venv: $(RUN_STAMP)

demo: $(RUN_STAMP)
	$(BIN)/tb --version
	$(BIN)/tb models list --pretrained --filter tf_efficientnet_lite
	$(BIN)/tb summary tf_efficientnet_lite0 --depth 1
	$(BIN)/tb finetune --freeze --amp

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

# The documentation site (mkdocs-material) into site/; strict: a broken link or reference fails.
docs: $(DEV_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The tests read real Fashion-MNIST files (Debian's dataset-fashion-mnist): tools/test_data.sh
# finds or provisions them.
test: $(DEV_STAMP) lint
	dir="$$(TB=$(BIN)/tb tools/test_data.sh)" && \
	    TB_TEST_FASHION_MNIST="$$dir" $(BIN)/python -m pytest -q

# The property-based tests with 25x the examples `make test` gives them (found failures are
# kept in .hypothesis/ and replayed first next time).
fuzz: $(DEV_STAMP)
	$(BIN)/python -m pytest -q tests/test_fuzz_*.py --hypothesis-profile=fuzz

# The benchmarks read the same Fashion-MNIST files as the tests.
bench: $(DEV_STAMP)
	dir="$$(TB=$(BIN)/tb tools/test_data.sh)" && export TB_TEST_FASHION_MNIST="$$dir" && \
	    for f in benchmarks/[!_]*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

# Builds the Dockerfile for real with buildah and runs tb inside the image (root, minutes; not
# part of `make test`). See tools/docker_check.py.
docker-check:
	$(PYTHON) tools/docker_check.py

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .ruff_cache .hypothesis .data
