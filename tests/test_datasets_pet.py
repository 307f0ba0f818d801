"""`tb datasets fetch oxford-iiit-pet`: tiny archives in the published layout, served on loopback,
become a tb segmentation folder (trimaps recoded, official splits) that `tb finetune` trains on."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from datasets_helpers import FileServer, _tar_bytes, md5

from toolbox.datasets import REGISTRY_ENV, get_dataset, open_dataset
from toolbox.errors import ToolboxError
from toolbox.images import read_image, read_mask

TRAINVAL = ["Abyssinian_1", "Abyssinian_2", "basset_hound_1"]
TEST = ["Bombay_3", "pug_7"]
SIZE = 24


def _encode(array: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _trimap(index: int) -> np.ndarray:
    """The published coding: 1 pet (a square), 3 its border, 2 background."""
    trimap = np.full((SIZE, SIZE), 2, dtype=np.uint8)
    lo = 4 + index
    trimap[lo - 1:lo + 11, lo - 1:lo + 11] = 3
    trimap[lo:lo + 10, lo:lo + 10] = 1
    return trimap


@pytest.fixture(scope="module")
def pet_files() -> dict[str, bytes]:
    """images.tar.gz and annotations.tar.gz as published: images/<id>.jpg (plus a stray .mat),
    annotations/{trainval,test,list}.txt, trimaps/<id>.png and macOS `._` leftovers."""
    rng = np.random.default_rng(0)
    ids = TRAINVAL + TEST
    images = {f"images/{i}.jpg": _encode(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
                                         "JPEG") for i in ids}
    images["images/Abyssinian_100.mat"] = b"MATLAB 5.0"
    lines = {name: "".join(f"{i} 1 1 1\n" for i in split)
             for name, split in (("trainval.txt", TRAINVAL), ("test.txt", TEST))}
    annotations = {f"annotations/{name}": text.encode() for name, text in lines.items()}
    annotations["annotations/list.txt"] = b"#Image CLASS-ID SPECIES BREED ID\n"
    for k, i in enumerate(ids):
        annotations[f"annotations/trimaps/{i}.png"] = _encode(_trimap(k), "PNG")
        annotations[f"annotations/trimaps/._{i}.png"] = b"\x00\x05\x16\x07"
    return {"images.tar.gz": _tar_bytes(images), "annotations.tar.gz": _tar_bytes(annotations)}


def _registry(tmp_path, files: dict[str, bytes], mirror: str):
    """A `tiny-pet` entry read like the built-in one, with the tiny archives' MD5s."""
    entry = {"name": "tiny-pet", "loader": "oxford-pet", "classes": ["background", "pet"],
             "mirrors": [mirror],
             "files": [{"filename": n, "md5": md5(b), "size": len(b), "unpack": "none",
                        "members": [{"path": f"tiny-pet/{n}", "md5": md5(b)}]}
                       for n, b in files.items()]}
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"datasets": [entry]}))
    return path


def test_registry_lists_the_published_archives_and_checksums():
    from torchvision.datasets import OxfordIIITPet

    info = get_dataset("oxford-iiit-pet")
    published = {url.rsplit("/", 1)[1]: md5 for url, md5 in OxfordIIITPet._RESOURCES}
    assert {f.filename: f.md5 for f in info.files} == published
    assert info.task == "segmentation" and (info.train_size, info.test_size) == (3680, 3669)
    assert info.mirrors[0] + "images.tar.gz" == OxfordIIITPet._RESOURCES[0][0]


def test_fetch_builds_a_segmentation_folder_that_trains(pet_files, tmp_path, invoke,
                                                        monkeypatch):
    with FileServer({f"/pets/{n}": b for n, b in pet_files.items()}) as server:
        monkeypatch.setenv(REGISTRY_ENV, str(_registry(tmp_path, pet_files,
                                                       f"{server.url}/pets/")))
        root = tmp_path / "data"
        result = invoke("datasets", "fetch", "tiny-pet", "--root", root, "--json")
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["state"] == "fetched" and report["splits"] == {"train": 3, "val": 2}
        assert [f["verified_by"] for f in report["files"]] == ["MD5 of the file"] * 2
        seg = root / "tiny-pet" / "segmentation"
        assert report["segmentation"]["dest"] == str(seg)
        assert (seg / "classes.txt").read_text().split() == ["background", "pet"]
        for split, ids in (("train", TRAINVAL), ("val", TEST)):
            assert sorted(p.stem for p in (seg / split / "images").iterdir()) == sorted(ids)
            assert sorted(p.stem for p in (seg / split / "masks").iterdir()) == sorted(ids)
        for k, image_id in enumerate(TRAINVAL + TEST):
            split = "train" if image_id in TRAINVAL else "val"
            mask = read_mask(seg / split / "masks" / f"{image_id}.png")
            expected = np.select([_trimap(k) == 1, _trimap(k) == 2], [1, 0], 255)
            assert np.array_equal(mask, expected)  # pet 1, background 0, border ignored
            assert read_image(seg / split / "images" / f"{image_id}.jpg").shape == (SIZE,
                                                                                     SIZE, 3)
        assert not list((root / ".tb-datasets").glob("staging/*"))
        # a second fetch verifies the archives and keeps the folder as it is
        again = invoke("datasets", "fetch", "tiny-pet", "--root", root)
        assert again.exit_code == 0, again.stderr
        assert "already present" in again.stdout and "train 3, val 2" in again.stdout
        assert "tb finetune --task segment --data" in again.stderr
    with pytest.raises(ToolboxError, match="segmentation data set") as err:
        open_dataset("tiny-pet", root, "train")
    assert str(seg) in err.value.hint
    run = invoke("finetune", "--task", "segment", "--data", seg, "--model", "test_resnet",
                 "--no-pretrained", "--img-size", "32", "--batch-size", "4", "--workers", "0",
                 "--epochs", "1", "--device", "cpu", "--out", tmp_path / "run", "--json")
    assert run.exit_code == 0, run.stderr
    trained = json.loads(run.stdout)
    assert trained["class_names"] == ["background", "pet"] and len(trained["epochs"]) == 1


def test_a_wrong_archive_is_refused_and_nothing_is_built(pet_files, tmp_path, invoke,
                                                        monkeypatch):
    with FileServer({f"/pets/{n}": b for n, b in pet_files.items()}) as server:
        server.faults["/pets/annotations.tar.gz"] = "wrong"
        monkeypatch.setenv(REGISTRY_ENV, str(_registry(tmp_path, pet_files,
                                                       f"{server.url}/pets/")))
        root = tmp_path / "data"
        result = invoke("datasets", "fetch", "tiny-pet", "--root", root)
    assert result.exit_code == 1
    assert "annotations.tar.gz failed its checksum" in result.stderr
    assert "Traceback" not in result.stderr
    assert (root / "tiny-pet" / "images.tar.gz").is_file()  # the good one is kept for a rerun
    assert not (root / "tiny-pet" / "segmentation").exists()
    assert not (root / "tiny-pet" / "annotations.tar.gz").exists()
    usage = invoke("datasets", "fetch", "tiny-pet", "--root", root, "--export-folder",
                   tmp_path / "png")
    assert usage.exit_code == 2 and "segmentation data set" in usage.stderr
    # offline: the published archive copied by hand completes the fetch
    (tmp_path / "annotations.tar.gz").write_bytes(pet_files["annotations.tar.gz"])
    offline = invoke("datasets", "fetch", "tiny-pet", "--root", root, "--from-archive",
                     tmp_path / "annotations.tar.gz", "--json")
    assert offline.exit_code == 0, offline.stderr
    assert json.loads(offline.stdout)["splits"] == {"train": 3, "val": 2}
