"""Throughput of `tb datasets fetch`'s downloader against a plain urllib copy of the same file,
both from a loopback HTTP server started here (so the network is not what is measured).

    .venv/bin/python benchmarks/download.py           # 256 MB, best of 3
    .venv/bin/python benchmarks/download.py --quick   # 16 MB, once (a smoke run)
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from datasets_helpers import FileServer  # noqa: E402

from toolbox.datasets import DownloadSettings, download, md5_file  # noqa: E402


def _urllib_copy(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=30) as resp, open(dest, "wb") as fh:
        shutil.copyfileobj(resp, fh, 1 << 20)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 MB, one repetition")
    parser.add_argument("--mb", type=int, default=None, help="file size in MB")
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args()
    size_mb = args.mb or (16 if args.quick else 256)
    repeat = args.repeat or (1 if args.quick else 3)
    payload = (hashlib.sha256(b"tb").digest() * (size_mb * (1 << 20) // 32 + 1))[
        : size_mb * (1 << 20)]
    expected = hashlib.md5(payload).hexdigest()
    nbytes = len(payload)
    results: dict[str, float] = {}
    with FileServer({"/f.bin": payload}) as server, tempfile.TemporaryDirectory() as tmp:
        url = f"{server.url}/f.bin"
        def urllib_then_md5(dest: Path) -> None:
            _urllib_copy(url, dest)
            assert hashlib.md5(dest.read_bytes()).hexdigest() == expected

        cases = {
            "urllib copy": lambda d: _urllib_copy(url, d),
            "urllib copy + MD5": urllib_then_md5,
            # resumable, MD5 computed while writing and checked before the rename
            "tb downloader": lambda d: download(
                [url], d, verify=lambda p: md5_file(p) == expected, settings=DownloadSettings()),
        }
        for name, run in cases.items():
            warm = Path(tmp) / "warm-up.bin"  # imports and first connection are not measured
            run(warm)
            warm.unlink()
            best = float("inf")
            for i in range(repeat):
                dest = Path(tmp) / f"{name.replace(' ', '_')}-{i}.bin"
                t0 = time.perf_counter()
                run(dest)
                best = min(best, time.perf_counter() - t0)
                assert dest.stat().st_size == nbytes
                dest.unlink()
            results[name] = nbytes / 1e6 / best
    print(f"loopback download of {size_mb} MB, best of {repeat}:")
    for name, mbps in results.items():
        print(f"  {name:<22} {mbps:8.1f} MB/s")
    base = results["urllib copy"]
    print(f"  ratio tb downloader / urllib copy:        {results['tb downloader'] / base:.2f}")
    print(f"  ratio tb downloader / urllib copy + MD5:  "
          f"{results['tb downloader'] / results['urllib copy + MD5']:.2f}")
    md5_rate = len(payload) / 1e6 / _timed(lambda: hashlib.md5(payload).hexdigest())
    print(f"  (MD5 alone on this CPU: {md5_rate:.0f} MB/s; verification is mandatory, so a "
          "loopback fetch cannot beat it)")


if __name__ == "__main__":
    main()
