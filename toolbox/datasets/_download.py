"""A dependable HTTP download: timeouts, retries with backoff, mirrors in order, Range resume.

`requests` does the transport (separate connect and read timeouts, redirects, proxies from the
environment, TLS); this module adds what neither it nor pooch offers: resuming `FILE.part` with
an HTTP Range request after a dropped connection, trying mirrors in order, progress in bytes
through the `Progress` protocol, and a checksum check before the atomic rename onto `FILE`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.datasets._verify import remember_md5
from toolbox.errors import ToolboxError
from toolbox.progress import NullProgress, Progress

MAX_TRIES = 100  # a mirror that keeps trickling bytes and dropping is given up eventually
PERMANENT_STATUS = frozenset({400, 401, 403, 404, 405, 410, 451})
WAY_OUT = ("pass --mirror URL (a server holding the same files), or fetch the files elsewhere "
           "and use --from-archive FILE or --from-dir DIR")


UNREACHABLE = frozenset({"connection refused", "name or service not known",
                         "temporary failure in name resolution", "network is unreachable",
                         "no route to host"})


class DownloadError(ToolboxError):
    """No mirror delivered the file; `attempts` says what each URL answered."""

    def __init__(self, filename: str, attempts: list[str], hint: str = WAY_OUT) -> None:
        super().__init__(f"could not download {filename}: {'; '.join(attempts)}", hint)
        self.attempts = attempts


class ChecksumError(ToolboxError):
    """A file's bytes do not match the checksum the registry records for it."""


@dataclass(frozen=True)
class DownloadSettings:
    """How patient a download is. Tests shrink these to make faults fail in a second."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 3  # further tries per mirror after a transient failure (a try that made
    backoff: float = 0.5  # progress resets the count); waits backoff, 2*backoff, 4*backoff ...
    chunk_size: int = 1 << 20


@dataclass
class Downloaded:
    """What a download did."""

    path: Path
    url: str
    bytes: int
    resumed_at: list[int] = field(default_factory=list)  # offsets continued with HTTP Range
    seconds: float = 0.0
    tries: int = 1
    failures: list[str] = field(default_factory=list)


class _Hasher:
    """MD5 of the `.part` computed while it is written, so verifying needs no second read."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.digest = hashlib.md5(usedforsecurity=False)
        self.count = 0

    def sync(self, part: Path, offset: int) -> None:
        """Make the digest cover exactly the first `offset` bytes of `part`."""
        if self.count == offset:
            return
        self.reset()
        with open(part, "rb") as fh:
            while self.count < offset:
                block = fh.read(min(1 << 20, offset - self.count))
                if not block:
                    break
                self.update(block)

    def update(self, block: bytes) -> None:
        self.digest.update(block)
        self.count += len(block)


class _Transient(Exception):
    """A failure worth retrying on the same mirror (drop, timeout, 5xx)."""


class _Permanent(Exception):
    """A failure this mirror will repeat (404, 403 ...): go to the next one."""


def _describe(exc: BaseException, settings: DownloadSettings) -> str:
    import requests

    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection within {settings.connect_timeout:g}s"
    if isinstance(exc, requests.ReadTimeout) or "timed out" in str(exc).lower():
        return f"no data for {settings.read_timeout:g}s"
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        for known in ("Connection refused", "Name or service not known",
                      "Temporary failure in name resolution", "Network is unreachable",
                      "No route to host", "IncompleteRead", "Connection reset"):
            if known in text:
                return known.lower()
        return "connection failed"
    if isinstance(exc, _Transient | _Permanent):
        return str(exc)
    if isinstance(exc, requests.RequestException):
        return f"bad URL ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _stream_once(session, url: str, part: Path, settings: DownloadSettings,
                 progress: Progress, label: str, hasher: _Hasher) -> tuple[int, int]:
    """One HTTP request that appends to `part` (Range resume). Returns (offset, bytes written)."""
    import requests
    import urllib3

    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}  # the bytes as published, never re-encoded
    if offset:
        headers["Range"] = f"bytes={offset}-"
    written = 0
    try:
        resp = session.get(url, headers=headers, stream=True,
                           timeout=(settings.connect_timeout, settings.read_timeout))
    except (requests.ConnectTimeout, requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema) as exc:
        raise _Permanent(_describe(exc, settings)) from exc
    except requests.ConnectionError as exc:
        # Refused, unresolvable or unreachable: retrying the same host is only slower, so an
        # offline machine fails in moments and the next mirror gets its turn at once.
        if not isinstance(exc, requests.ReadTimeout) and _describe(exc, settings) in UNREACHABLE:
            raise _Permanent(_describe(exc, settings)) from exc
        raise
    with resp:
        if resp.status_code == 416 and offset:
            return offset, 0  # the part is already whole (the checksum will tell)
        if resp.status_code in PERMANENT_STATUS:
            raise _Permanent(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise _Transient(f"HTTP {resp.status_code}")
        mode = "ab"
        if offset and not (resp.status_code == 206 and resp.headers.get(
                "Content-Range", "").startswith(f"bytes {offset}-")):
            offset, mode = 0, "wb"  # the server ignored the Range: start again
        if offset:
            hasher.sync(part, offset)
        else:
            hasher.reset()
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        progress.start(label, total, unit="B")
        if offset:
            progress.advance(offset)
        try:
            with open(part, mode) as fh:
                for chunk in resp.raw.stream(settings.chunk_size, decode_content=False):
                    fh.write(chunk)
                    hasher.update(chunk)
                    written += len(chunk)
                    progress.advance(len(chunk))
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            raise _Transient(_describe(exc, settings) if not isinstance(
                exc, urllib3.exceptions.ProtocolError) else "connection dropped") from exc
        finally:
            progress.finish()
        if total is not None and offset + written < total:
            raise _Transient(f"connection dropped at {offset + written} of {total} bytes")
    return offset, written


def download(urls: Sequence[str], dest: Path, *, verify: Callable[[Path], bool],
             settings: DownloadSettings = DownloadSettings(),
             progress: Progress | None = None) -> Downloaded:
    """Download the first URL that works into `dest`, through `dest.part`.

    A dropped or stalled transfer is retried on the same URL with backoff and resumed with an
    HTTP Range request; 404/403-like answers go straight to the next URL. The finished `.part`
    must pass `verify` before it is renamed onto `dest`; one that fails is deleted.

    Raises:
        ChecksumError: a mirror delivered a whole file whose checksum is wrong (and none did
            better).
        DownloadError: no URL delivered the file (each URL's failure is in the message).
    """
    import requests

    progress = progress or NullProgress()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures: list[str] = []
    checksum_failed = False
    t0 = time.monotonic()
    tries = 0
    resumed_at: list[int] = []
    hasher = _Hasher()
    with requests.Session() as session:
        session.headers["User-Agent"] = "tb-toolbox (python-requests)"
        for url in urls:
            strikes = 0
            resumed = part_size(part)
            delivered = False
            while not delivered:
                tries += 1
                try:
                    offset, _ = _stream_once(session, url, part, settings, progress, dest.name,
                                             hasher)
                    if offset:
                        resumed_at.append(offset)
                    delivered = True
                except _Permanent as exc:
                    failures.append(f"{url}: {exc}")
                    break
                except (_Transient, requests.RequestException, OSError) as exc:
                    size_now = part_size(part)
                    if size_now > resumed and tries < MAX_TRIES:
                        strikes = 0  # a flaky line that still moves data keeps trying
                        resumed = size_now
                    else:
                        strikes += 1
                    if strikes > settings.retries:
                        failures.append(f"{url}: {_describe(exc, settings)}")
                        break
                    time.sleep(settings.backoff * 2 ** max(strikes - 1, 0))
            if not delivered:
                continue
            if hasher.count == part_size(part):
                remember_md5(part, hasher.digest.hexdigest())
            if verify(part):
                os.replace(part, dest)
                return Downloaded(dest, url, part_size(dest), resumed_at,
                                  time.monotonic() - t0, tries, failures)
            part.unlink(missing_ok=True)
            checksum_failed = True
            failures.append(f"{url}: checksum mismatch (file deleted)")
    if checksum_failed:
        raise ChecksumError(f"{dest.name} failed its checksum: {'; '.join(failures)}",
                            "the server sent different bytes than the registry records; "
                            + WAY_OUT)
    raise DownloadError(dest.name, failures or ["no URL to try"])


def part_size(path: Path) -> int:
    """Size of `path` in bytes (0 when absent)."""
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0
