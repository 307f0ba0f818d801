"""The data set downloader against a loopback server: resume, bad bytes, mirrors, stalls,
offline, and archives that try to escape their folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from datasets_helpers import (
    CIFAR_TEST,
    CIFAR_TRAIN_PER_BATCH,
    FileServer,
    closed_port_url,
    evil_tar,
    tiny_data,
)

from toolbox.datasets import REGISTRY_ENV, check_dataset, get_dataset, open_dataset
from toolbox.datasets._download import ChecksumError, DownloadError, DownloadSettings
from toolbox.datasets._extract import UnsafeArchiveError, extract_archive
from toolbox.datasets._fetch import fetch_dataset
from toolbox.errors import ToolboxError

FAST = DownloadSettings(connect_timeout=1.0, read_timeout=1.0, retries=2, backoff=0.01,
                        chunk_size=4096)
TARBALL = "tiny-cifar-10-python.tar.gz"


@pytest.fixture(scope="module")
def data():
    return tiny_data()


@pytest.fixture
def server(data):
    with FileServer({f"/good/{n}": b for n, b in data.files.items()}) as srv:
        yield srv


@pytest.fixture
def registry(tmp_path, data, server, monkeypatch):
    """Registry entries for the tiny data sets, pointed at the test server."""
    path = data.registry(tmp_path / "registry.json", [f"{server.url}/good/"])
    monkeypatch.setenv(REGISTRY_ENV, str(path))
    return path


def _leftovers(root: Path) -> list[str]:
    """Files under root apart from bookkeeping (manifests, the fetch lock)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.suffix not in (".json", ".lock"))


def test_drop_half_way_resumes_with_range_and_verifies(tmp_path, server, registry):
    server.faults[f"/good/{TARBALL}"] = "drop_once"
    result = fetch_dataset(name="tiny-cifar10", root=tmp_path / "data", settings=FAST)
    assert result.state == "fetched"
    ranges = [r for p, r in server.requests if p.endswith(TARBALL)]
    assert ranges[0] is None and ranges[1] is not None  # second request continued the file
    offset = int(ranges[1].split("=")[1].rstrip("-"))
    assert 0 < offset < result.files[0].bytes
    assert result.files[0].resumed_at == [offset]
    assert result.splits == {"train": 5 * CIFAR_TRAIN_PER_BATCH, "test": CIFAR_TEST}
    ds = open_dataset("tiny-cifar10", tmp_path / "data", "train")
    image, label = ds[3]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and label == 3
    assert ds.classes[0] == "airplane"
    assert check_dataset(get_dataset("tiny-cifar10"), tmp_path / "data", full=True).present
    # the download itself is gone once unpacked; no .part anywhere
    assert not list((tmp_path / "data").rglob("*.part"))


def test_partial_file_from_an_earlier_run_is_resumed(tmp_path, data, server, registry):
    root = tmp_path / "data"
    part = root / ".tb-datasets" / "downloads" / f"{TARBALL}.part"
    part.parent.mkdir(parents=True)
    whole = data.files[TARBALL]
    part.write_bytes(whole[:1000])
    result = fetch_dataset(name="tiny-cifar10", root=root, settings=FAST)
    assert server.requests[0][1] == "bytes=1000-"
    assert result.files[0].resumed_at == [1000]
    assert len(open_dataset("tiny-cifar10", root, "test")) == CIFAR_TEST


def test_wrong_bytes_fail_the_checksum_and_leave_nothing(tmp_path, server, registry):
    server.faults[f"/good/{TARBALL}"] = "wrong"
    root = tmp_path / "data"
    with pytest.raises(ChecksumError, match="checksum"):
        fetch_dataset(name="tiny-cifar10", root=root, settings=FAST)
    assert _leftovers(root) == []
    assert check_dataset(get_dataset("tiny-cifar10"), root).state == "missing"
    with pytest.raises(ToolboxError) as info:
        open_dataset("tiny-cifar10", root, "train")
    assert info.value.hint == f"tb datasets fetch tiny-cifar10 --root {root}"


def test_404_then_a_working_second_mirror(tmp_path, server, registry):
    result = fetch_dataset(name="tiny-mnist", root=tmp_path / "data", settings=FAST,
                           mirrors=[f"{server.url}/missing/"])
    paths = [p for p, _ in server.requests]
    assert paths[0].startswith("/missing/") and paths[1].startswith("/good/")
    assert all(f.source.startswith(f"{server.url}/good/") for f in result.files)
    ds = open_dataset("tiny-mnist", tmp_path / "data", "train")
    image, label = ds[7]
    # grayscale idx images come out replicated to three channels
    assert image.shape == (28, 28, 3) and (image[..., 0] == image[..., 2]).all()
    assert label == 7 and len(ds) == 30


def test_stalled_server_times_out_fast(tmp_path, server, registry):
    server.faults[f"/good/{TARBALL}"] = "stall"
    settings = DownloadSettings(connect_timeout=1, read_timeout=0.3, retries=0, backoff=0.01,
                                chunk_size=4096)
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=r"no data for 0\.3s") as info:
        fetch_dataset(name="tiny-cifar10", root=tmp_path / "data", settings=settings)
    assert time.monotonic() - t0 < 3
    assert "--mirror" in info.value.hint and "--from-archive" in info.value.hint
    # the partial download stays hidden as .part for a later resume; nothing looks complete
    assert check_dataset(get_dataset("tiny-cifar10"), tmp_path / "data").state == "missing"
    assert [p.name for p in (tmp_path / "data").rglob("*.part")] == [f"{TARBALL}.part"]


def test_rerun_after_success_verifies_and_skips(tmp_path, server, registry):
    root = tmp_path / "data"
    fetch_dataset(name="tiny-mnist", root=root, settings=FAST)
    count = len(server.requests)
    again = fetch_dataset(name="tiny-mnist", root=root, settings=FAST)
    assert again.state == "already present" and len(server.requests) == count
    # a member changed behind our back is caught (no published checksum: the manifest's)
    member = root / "TinyMNIST" / "raw" / "t10k-labels-idx1-ubyte"
    raw = bytearray(member.read_bytes())
    raw[-1] ^= 1
    member.write_bytes(bytes(raw))
    assert check_dataset(get_dataset("tiny-mnist"), root).state == "corrupt"
    with pytest.raises(ToolboxError, match="fail their checksum"):
        open_dataset("tiny-mnist", root, "test")
    repaired = fetch_dataset(name="tiny-mnist", root=root, settings=FAST)
    assert [f.action for f in repaired.files].count("downloaded") == 1
    assert len(open_dataset("tiny-mnist", root, "test")) == 12


def test_offline_fails_in_seconds_naming_the_url_and_the_ways_out(tmp_path, data, invoke,
                                                                 monkeypatch):
    dead = closed_port_url()
    monkeypatch.setenv(REGISTRY_ENV, str(data.registry(tmp_path / "r.json", [f"{dead}/x/"])))
    t0 = time.monotonic()
    result = invoke("datasets", "fetch", "tiny-cifar10", "--root", tmp_path / "data")
    assert time.monotonic() - t0 < 5
    assert result.exit_code == 1
    err = " ".join(result.stderr.split())
    assert f"{dead}/x/{TARBALL}" in err and "connection refused" in err
    assert "--mirror" in err and "--from-archive" in err and "Traceback" not in err
    assert _leftovers(tmp_path / "data") == []


@pytest.mark.parametrize("kind", ["dotdot", "symlink"])
def test_archive_members_escaping_the_folder_are_refused(tmp_path, kind, registry):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(evil_tar(kind))
    with pytest.raises(UnsafeArchiveError, match=r"refusing evil\.tar\.gz"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "tiny" / "ok.txt").exists()  # checked before writing
    assert not (tmp_path / "escaped.txt").exists()
    root = tmp_path / "data"
    with pytest.raises(UnsafeArchiveError):
        fetch_dataset(name="tiny-cifar10", root=root, from_archives=[archive])
    assert not (tmp_path / "escaped.txt").exists() and _leftovers(root) == []


def test_from_archive_takes_the_published_file_and_a_repacked_one(tmp_path, data, registry):
    published = tmp_path / TARBALL
    published.write_bytes(data.files[TARBALL])
    a = fetch_dataset(name="tiny-cifar10", root=tmp_path / "a", from_archives=[published])
    assert a.state == "imported" and a.files[0].verified_by == "MD5 of the file"
    # the same members in a zip with another name: verified member by member
    import zipfile

    repacked = tmp_path / "my-copy.zip"
    with zipfile.ZipFile(repacked, "w") as zf:
        for name, blob in data.cifar_members.items():
            zf.writestr(f"somewhere/{Path(name).name}", blob)
    b = fetch_dataset(name="tiny-cifar10", root=tmp_path / "b", from_archives=[repacked])
    assert b.files[0].verified_by == "MD5 of every unpacked file"
    assert b.splits == a.splits


class _Recorder:
    """A Progress that keeps what it was told."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, float | None, str]] = []
        self.done = 0.0
        self.notes: list[str] = []

    def start(self, description, total, unit="items"):
        self.starts.append((description, total, unit))

    def advance(self, amount=1):
        self.done += amount

    def note(self, message):
        self.notes.append(message)

    def finish(self):
        pass


def test_server_ignoring_range_restarts_cleanly_and_progress_counts_bytes(tmp_path, data,
                                                                         server, registry):
    server.faults[f"/good/{TARBALL}"] = "no_range"
    root = tmp_path / "data"
    part = root / ".tb-datasets" / "downloads" / f"{TARBALL}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that must not survive")
    progress = _Recorder()
    result = fetch_dataset(name="tiny-cifar10", root=root, settings=FAST, progress=progress)
    assert result.files[0].resumed_at == []  # the server sent the whole file (200), from zero
    size = len(data.files[TARBALL])
    assert progress.starts == [(TARBALL, size, "B")] and progress.done == size
    assert any("verified by MD5 of the file" in n for n in progress.notes)


def test_registry_file_cannot_replace_builtin_checksums(tmp_path, monkeypatch):
    bad = tmp_path / "r.json"
    entry = {"name": "cifar10", "loader": "cifar10",
             "files": [{"filename": "x", "md5": "0", "members": [{"path": "a/b"}]}]}
    bad.write_text(json.dumps([entry]))
    monkeypatch.setenv(REGISTRY_ENV, str(bad))
    with pytest.raises(ToolboxError, match="clashes with a built-in"):
        get_dataset("cifar10")


def test_files_left_by_torchvision_download_are_verified_in_place(tmp_path, data, monkeypatch):
    """torchvision's download=True keeps the .gz beside the idx files and writes no manifest."""
    monkeypatch.setenv(REGISTRY_ENV, str(data.registry(tmp_path / "r.json",
                                                       [f"{closed_port_url()}/x/"])))
    root = tmp_path / "data"
    raw = root / "TinyMNIST" / "raw"
    raw.mkdir(parents=True)
    for name, blob in data.files.items():
        if name[:-3] in data.mnist_raw:
            (raw / name).write_bytes(blob)
            (raw / name[:-3]).write_bytes(data.mnist_raw[name[:-3]])
    with pytest.raises(ToolboxError, match="never verified"):
        open_dataset("tiny-mnist", root, "train")
    result = fetch_dataset(name="tiny-mnist", root=root, settings=FAST)  # no network needed
    assert {f.action for f in result.files} == {"verified in place"}
    assert len(open_dataset("tiny-mnist", root, "train")) == 30


def test_a_second_fetch_of_the_same_data_set_is_refused_while_one_runs(tmp_path, registry):
    import fcntl

    root = tmp_path / "data"
    lock = root / ".tb-datasets" / "tiny-mnist.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(ToolboxError, match="another fetch of 'tiny-mnist'"):
            fetch_dataset(name="tiny-mnist", root=root, settings=FAST)


def test_a_verified_download_whose_unpack_was_interrupted_is_reused(tmp_path, data,
                                                                   monkeypatch):
    monkeypatch.setenv(REGISTRY_ENV, str(data.registry(tmp_path / "r.json",
                                                       [f"{closed_port_url()}/x/"])))
    root = tmp_path / "data"
    kept = root / ".tb-datasets" / "downloads" / TARBALL
    kept.parent.mkdir(parents=True)
    kept.write_bytes(data.files[TARBALL])
    result = fetch_dataset(name="tiny-cifar10", root=root, settings=FAST)  # no network needed
    assert result.files[0].source.endswith("(downloaded earlier)")
    assert not kept.exists() and len(open_dataset("tiny-cifar10", root, "test")) == CIFAR_TEST
