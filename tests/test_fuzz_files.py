"""Property-based tests of the readers of user bytes: images, archives, model files, checkpoints.

Each reader returns a well-formed result or raises one ToolboxError line, runs no code from the
file, and writes nothing outside the folder it was given.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from fuzz_helpers import budget, check_error, outcome, tree
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from toolbox.datasets import UnsafeArchiveError, extract_archive
from toolbox.errors import ToolboxError
from toolbox.images import IMAGE_EXTENSIONS, read_image, read_mask
from toolbox.models import load_model_file, load_state_dict, read_meta
from toolbox.train.checkpoint import load_checkpoint

SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


# --------------------------------------------------------------------------------- images
def _encoded(array: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[array.shape[2]]
    image = Image.fromarray(array if mode != "L" else array[:, :, 0], mode)
    if fmt == "GIF":
        image = image.convert("P")
    image.save(buffer, format=fmt)
    return buffer.getvalue()


FORMATS = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".tif": "TIFF",
           ".webp": "WEBP"}


@st.composite
def image_bytes(draw: st.DrawFn) -> tuple[str, bytes]:
    """A real small image of a random format, then maybe truncated or with bytes changed."""
    suffix = draw(st.sampled_from(sorted(FORMATS)))
    shape = (draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.sampled_from([1, 3, 4])))
    if FORMATS[suffix] == "JPEG" and shape[2] == 4:
        shape = (*shape[:2], 3)
    seed = draw(st.integers(0, 2**16))
    data = bytearray(_encoded(np.random.default_rng(seed).integers(0, 256, shape, np.uint8),
                              FORMATS[suffix]))
    for _ in range(draw(st.integers(0, 3))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return suffix, bytes(data[:cut] if draw(st.booleans()) else data)


def _bmp_bomb() -> bytes:
    """A tiny BMP whose header claims 20,000 x 20,000 pixels (PIL refuses it as a bomb)."""
    data = bytearray(_encoded(np.zeros((2, 2, 3), np.uint8), "BMP"))
    data[18:26] = (20000).to_bytes(4, "little") * 2  # width, height
    return bytes(data)


@SETTINGS
@given(case=image_bytes() | st.tuples(st.sampled_from(sorted(IMAGE_EXTENSIONS)),
                                      st.binary(max_size=200)))
@example(case=(".bmp", _bmp_bomb()))
def test_image_reader_returns_rgb_or_one_line(tmp_path, case):
    suffix, data = case
    path = tmp_path / f"image{suffix}"
    path.write_bytes(data)
    try:
        image = outcome(read_image, path)
        if image is not None:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert image.flags.c_contiguous and image.size
        mask = outcome(read_mask, path)
        if mask is not None:
            assert mask.ndim == 2
        assert tree(tmp_path) == {path.name}
    finally:
        path.unlink()


# ------------------------------------------------------------------------------- archives
NAMES = st.one_of(
    st.from_regex(r"[a-z]{1,6}(/[a-z]{1,6}){0,2}", fullmatch=True),
    st.sampled_from(["../escape", "../../escape", "/abs", "/etc/passwd", "a/../../escape",
                     "a/./b", "./c", "C:/x", "C:\\x", "a\\..\\..\\escape", "\\abs", "..", ".",
                     "a//b", "a/", "dir/../", "x" * 300, "/".join(["d"] * 200) + "/f", "é/ü"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            min_size=1, max_size=12))
LINK_TARGETS = st.sampled_from(["../escape", "/etc/passwd", "/tmp", "a", "a/b", "..", ".",
                                "x/../../..", "link"]) | NAMES
KINDS = ["file", "dir", "symlink", "hardlink", "fifo", "chardev"]


@st.composite
def tar_archives(draw: st.DrawFn) -> bytes:
    buffer = io.BytesIO()
    mode = draw(st.sampled_from(["w", "w:gz", "w:bz2", "w:xz"]))
    with tarfile.open(fileobj=buffer, mode=mode, format=draw(st.sampled_from(
            [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]))) as tar:
        for _ in range(draw(st.integers(0, 4))):
            info = tarfile.TarInfo(draw(NAMES))
            kind = draw(st.sampled_from(KINDS))
            info.mode = draw(st.sampled_from([0o644, 0o755, 0o4755, 0o777, 0o000]))
            payload = b""
            if kind == "file":
                payload = draw(st.binary(max_size=20))
                info.size = len(payload)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind in ("symlink", "hardlink"):
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = draw(LINK_TARGETS)
            else:
                info.type = tarfile.FIFOTYPE if kind == "fifo" else tarfile.CHRTYPE
            with contextlib.suppress(ValueError):  # a name the tar format cannot store
                tar.addfile(info, io.BytesIO(payload) if payload else None)
    return buffer.getvalue()


@st.composite
def zip_archives(draw: st.DrawFn) -> bytes:
    buffer = io.BytesIO()
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                   zipfile.ZIP_LZMA]))
    with zipfile.ZipFile(buffer, "w", method) as zf:
        for _ in range(draw(st.integers(0, 4))):
            info = zipfile.ZipInfo(draw(NAMES))
            if draw(st.booleans()):  # a stored symlink (what `zip --symlinks` writes)
                info.external_attr = (0o120777 << 16)
                payload = draw(LINK_TARGETS).encode()
            else:
                payload = draw(st.binary(max_size=20))
            zf.writestr(info, payload)
    return buffer.getvalue()


@st.composite
def damaged(draw: st.DrawFn, archives: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(archives))
    for _ in range(draw(st.integers(0, 3)) if data else 0):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if data and draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


def _tar_of_links(*links: tuple[str, str], kind: bytes = tarfile.SYMTYPE) -> bytes:
    """A tar of links of one `kind`, (name, target) each, in that order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return buffer.getvalue()


def _tar_of_a_folder_then_a_link(name: str, target: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for kind in (tarfile.DIRTYPE, tarfile.SYMTYPE):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target if kind == tarfile.SYMTYPE else ""
            tar.addfile(info)
    return buffer.getvalue()


def _zip_with_an_empty_name() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(zipfile.ZipInfo(""), b"")
    return buffer.getvalue()


def _zip_with_an_encrypted_member() -> bytes:
    """A member whose headers say it is encrypted (zipfile asks for a password)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("secret.png", b"x")
    data = bytearray(buffer.getvalue())
    for header, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local, central
        data[data.index(header) + flags_at] |= 0x1
    return bytes(data)


def _zip_with_a_bad_name() -> bytes:
    """A zip that says its member name is UTF-8 but holds bytes that are not."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("é", b"x")
    return buffer.getvalue().replace("é".encode(), b"\xe0\xa0")


def _inside(path: Path, folder: Path) -> bool:
    # realpath, unlike Path.resolve on Python 3.11, answers for a link loop (`a -> a`) too.
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


@SETTINGS
@given(data=tar_archives() | zip_archives() | damaged(tar_archives() | zip_archives())
       | st.binary(max_size=300),
       name=st.sampled_from(["a.tar", "a.tar.gz", "a.zip", "a.tgz", "a.bin"]))
@example(data=_zip_with_a_bad_name(), name="a.zip")
@example(data=_zip_with_an_empty_name(), name="a.zip")
@example(data=_zip_with_an_encrypted_member(), name="a.zip")
@example(data=_tar_of_links(("x", "."), kind=tarfile.LNKTYPE), name="a.tar")  # recursed
@example(data=_tar_of_links(("x", "x"), kind=tarfile.LNKTYPE), name="a.tar")
# A hard link to no member; a symbolic link whose target is too long to follow.
@example(data=_tar_of_links(("link", "missing"), kind=tarfile.LNKTYPE), name="a.tar")
@example(data=_tar_of_links(("0", "x" * 5000)), name="a.tar")
# A link replacing a folder of its name: tarfile, failing to unlink the folder, copies the
# link's target instead, which is the link itself (RecursionError).
@example(data=_tar_of_a_folder_then_a_link("d", "d"), name="a.tar")
# A link whose own name is too long to make: the same fallback, the same recursion.
@example(data=_tar_of_links(("x" * 300, "x" * 300)), name="a.tar")
# Each link passes the filter alone, yet they point outside: a link named "a/" (its target is
# judged from inside a/, the link is made as a), a chain through a link that climbs, and a
# link to "a//b" (a loop that Python 3.11's realpath reads as /b).
@example(data=_tar_of_links(("a/", "../escape")), name="a.tar")
@example(data=_tar_of_links(("a/", "a//b")), name="a.tar")
@example(data=_tar_of_links(("d1/d2/l1", ".."), ("l2", "d1/d2/l1/../../..")), name="a.tar")
def test_archive_extracts_inside_dest_or_is_refused(tmp_path, data, name):
    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        work = Path(folder) / "work"
        archive, dest = work / name, work / "dest"
        work.mkdir()
        archive.write_bytes(data)
        try:
            files = extract_archive(archive, dest)
        except ToolboxError as exc:
            check_error(exc)
            if isinstance(exc, UnsafeArchiveError):
                assert tree(dest) == set(), "a refused archive left files behind"
            files = []
        assert all(_inside(f, dest) for f in files)
        for path in dest.rglob("*"):
            assert _inside(path, dest), f"{path} points outside the extraction folder"
        assert {p.split("/")[0] for p in tree(work)} <= {name, "dest"}
        assert tree(Path(folder)) == {"work"} | {f"work/{p}" for p in tree(work)}


# ----------------------------------------------------------------- model files, checkpoints
class _RunsCode:
    """A pickle that would create a file when loaded without `weights_only`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _tensors() -> st.SearchStrategy:
    import torch

    shapes = st.lists(st.integers(0, 3), max_size=3)
    return st.builds(lambda shape, dtype: torch.zeros(shape, dtype=dtype), shapes,
                     st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool]))


_PLAIN = st.recursive(st.none() | st.booleans() | st.integers(-5, 10**20) | st.floats()
                      | st.text(max_size=8) | _tensors(),
                      lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=3),
                      max_leaves=8)
_META = st.fixed_dictionaries({}, optional={
    "model": st.sampled_from(["test_resnet", "test_vit", "no_such_net", "", "tv:x"]) | _PLAIN,
    "num_classes": st.integers(-2, 5) | _PLAIN,
    "class_names": st.lists(st.text(max_size=4), max_size=3) | _PLAIN,
    "input_size": st.lists(st.integers(-1, 64), max_size=4) | _PLAIN,
    "mean": _PLAIN, "std": _PLAIN, "crop_pct": _PLAIN, "interpolation": _PLAIN,
    "model_kwargs": st.dictionaries(st.sampled_from(["drop_rate", "in_chans", "x"]), _PLAIN,
                                    max_size=2) | _PLAIN})


def _plain_for_json(value):
    """`value` without tensors (JSON metadata in a safetensors header)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, list):
        return [_plain_for_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain_for_json(v) for k, v in value.items()}
    return value


@st.composite
def model_files(draw: st.DrawFn, marker: Path) -> tuple[str, bytes]:
    """Bytes of a .safetensors, .pt or .pth file: real files with random contents and metadata,
    damaged ones, pickles that would run code, and random bytes."""
    import torch
    from safetensors.torch import save

    kind = draw(st.sampled_from(["safetensors", "pt", "evil", "bytes"]))
    if kind == "bytes":
        return draw(st.sampled_from([".safetensors", ".pt", ".pth"])), draw(st.binary(max_size=200))
    if kind == "evil":
        payload = draw(st.sampled_from([_RunsCode(marker), {"model": _RunsCode(marker)},
                                        {"meta": {"model": _RunsCode(marker)}}]))
        if draw(st.booleans()):
            return ".pt", pickle.dumps(payload)
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return ".pt", buffer.getvalue()
    meta = draw(_META)
    if kind == "safetensors":
        tensors = draw(st.dictionaries(st.text(min_size=1, max_size=8), _tensors(), max_size=3))
        header = draw(st.sampled_from(["json", "text", "none"]))
        metadata = ({"tb_meta": json.dumps(_plain_for_json(meta))} if header == "json"
                    else {"tb_meta": draw(st.text(max_size=20))} if header == "text" else None)
        data = bytearray(save({k: v.contiguous() for k, v in tensors.items()}, metadata))
    else:
        state = draw(st.sampled_from(["dict", "plain"]))
        content = ({"model": draw(st.dictionaries(st.text(max_size=8) | st.integers(),
                                                  _tensors(), max_size=3)),
                    "meta": meta, "optimizer": {}, "epoch": 1, "args": draw(_PLAIN)}
                   if state == "dict" else draw(_PLAIN))
        buffer = io.BytesIO()
        torch.save(content, buffer)
        data = bytearray(buffer.getvalue())
    if data and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if data and draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return (".safetensors" if kind == "safetensors" else draw(st.sampled_from([".pt", ".pth"])),
            bytes(data))


MARKER = Path(tempfile.gettempdir()) / "tb-fuzz-pickle-ran"


@settings(SETTINGS, max_examples=budget(1.0))
@given(case=model_files(MARKER))
def test_model_files_and_checkpoints_load_or_are_refused(tmp_path, case):
    suffix, data = case
    path = tmp_path / f"model{suffix}"
    path.write_bytes(data)
    try:
        for reader in (read_meta, load_state_dict, load_model_file, load_checkpoint):
            outcome(reader, path)
        assert not MARKER.exists(), "loading a model file ran code from it"
        assert tree(tmp_path) == {path.name}
    finally:
        path.unlink()


# ----------------------------------------------------------------- data set registry files
_PATHS = st.sampled_from(["cifar/data_batch_1", "../escape", "/abs/x", "a/../../x", "a\\..\\x",
                          "C:/x", "", ".", "a/./b", "ok.tar.gz", "x" * 300]) | st.text(max_size=8)
_ANY = st.none() | st.integers() | st.text(max_size=6) | st.lists(st.integers(), max_size=2)


@st.composite
def registry_entries(draw: st.DrawFn) -> dict:
    """A valid-looking `$TB_DATASETS_REGISTRY` entry with some fields made hostile."""
    member = {"path": draw(_PATHS), "md5": draw(st.sampled_from(["0" * 32, None]) | _ANY)}
    file = {"filename": draw(_PATHS), "md5": "0" * 32, "size": draw(st.integers(-1, 10) | _ANY),
            "unpack": draw(st.sampled_from(["tar", "gzip", "none", "zip"]) | _ANY),
            "members": draw(st.sampled_from([[member], [member, member], []]) | _ANY)}
    entry = {"name": draw(st.sampled_from(["mine", "cifar10", "a/b", "..", ""]) | _PATHS | _ANY),
             "loader": draw(st.sampled_from(["cifar10", "mnist", "nope"]) | _ANY),
             "files": draw(st.sampled_from([[file], []]) | _ANY),
             "classes": draw(st.lists(st.text(max_size=3), max_size=2) | _ANY)}
    for key in draw(st.lists(st.sampled_from(sorted(entry)), max_size=2, unique=True)):
        del entry[key]
    return entry


@SETTINGS
@given(data=st.lists(registry_entries(), max_size=2).map(lambda e: {"datasets": e})
       | st.lists(registry_entries(), max_size=2) | _ANY | st.dictionaries(st.text(max_size=3),
                                                                             _ANY, max_size=2))
@example(data={"datasets": [{"name": None, "loader": "cifar10", "files": [
    {"filename": "a.tar", "md5": "0" * 32, "members": [{"path": "a/b"}]}]}]})
@example(data={"datasets": [{"name": "mine", "loader": "cifar10", "files": [
    {"filename": "a.tar", "md5": "0" * 32, "unpack": [], "members": [{"path": "a/b"}]}]}]})
def test_registry_files_load_or_are_refused(tmp_path, monkeypatch, data):
    from toolbox.datasets import REGISTRY_ENV, list_datasets

    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps(data))
    monkeypatch.setenv(REGISTRY_ENV, str(registry))
    infos = outcome(list_datasets)
    root = tmp_path / "root"
    for info in infos or []:
        targets = [root / info.name, root / "downloads" / info.name]
        targets += [root / "downloads" / f.filename for f in info.files]
        targets += [root / m.path for m in info.members]
        assert all(_inside(t, root) for t in targets), info
