"""Where the toolbox keeps its own files: the user cache dir (overridable for tests and Docker);
and which data locations are not local paths."""

from __future__ import annotations

import os
import re
from pathlib import Path

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def is_remote(location: str) -> bool:
    """A location that webdataset opens itself (`pipe:` commands, http, s3, gs, ... URLs),
    which must be passed on as typed: `Path` would fold a URL's `//`."""
    return location.startswith("pipe:") or bool(_URL.match(location))


def cache_dir() -> Path:
    """`$TB_CACHE_DIR`, else the platform's user cache dir for `tb` (e.g. ~/.cache/tb)."""
    override = os.environ.get("TB_CACHE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("tb", appauthor=False))
