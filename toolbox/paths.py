"""Where the toolbox keeps its own files: the user cache dir (overridable for tests and Docker)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$TB_CACHE_DIR`, else the platform's user cache dir for `tb` (e.g. ~/.cache/tb)."""
    override = os.environ.get("TB_CACHE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("tb", appauthor=False))
