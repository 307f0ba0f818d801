"""`tb datasets list/fetch` and `open_dataset`: the registry, Debian's real Fashion-MNIST files
(re-compressed .gz), ImageFolder export, and a fetch through the real `tb` program."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FASHION_MNIST_DIR
from datasets_helpers import CIFAR_TEST, FileServer, tiny_data

from toolbox.datasets import (
    REGISTRY_ENV,
    dataset_names,
    get_dataset,
    list_datasets,
    open_dataset,
)
from toolbox.datasets._download import ChecksumError
from toolbox.datasets._fetch import fetch_dataset
from toolbox.errors import ToolboxError
from toolbox.images import read_image, scan_image_folder

FMNIST_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


@pytest.fixture(scope="module")
def fmnist_root(tmp_path_factory) -> Path:
    """Debian's Fashion-MNIST imported once with --from-dir (through the CLI service)."""
    root = tmp_path_factory.mktemp("fmnist")
    fetch_dataset(name="fashion-mnist", root=root, from_dir=FASHION_MNIST_DIR)
    return root


def test_registry_has_the_six_data_sets_with_their_facts():
    assert dataset_names()[:6] == ["cifar10", "cifar100", "mnist", "fashion-mnist", "kmnist",
                                   "svhn"]
    cifar100 = get_dataset("cifar100")
    assert len(cifar100.classes) == 100 and cifar100.files[0].md5 == (
        "eb9058c3a382ffc7106e4002c42a8d85")  # torchvision's
    for info in list_datasets():
        assert info.mirrors and info.license_url.startswith("http") and info.download_size > 0
        assert all(len(f.md5) == 32 for f in info.files)
    with pytest.raises(ToolboxError, match="unknown data set 'fashon-mnist'") as err:
        get_dataset("fashon-mnist")
    assert "fashion-mnist" in err.value.hint


def test_debian_recompressed_files_are_accepted_by_their_content(fmnist_root, tmp_path):
    # The .gz bytes differ from upstream (the published MD5 fails) ...
    from toolbox.datasets._verify import md5_file

    published = {f.filename: f.md5 for f in get_dataset("fashion-mnist").files}
    assert md5_file(FASHION_MNIST_DIR / FMNIST_FILES[3]) != published[FMNIST_FILES[3]]
    # ... but the decompressed data is the real one, so the import verified it by content.
    assert fetch_dataset(name="fashion-mnist", root=tmp_path,
                         from_archives=[FASHION_MNIST_DIR / f for f in FMNIST_FILES]
                         ).files[0].verified_by.startswith("MD5 of the decompressed data")
    again = fetch_dataset(name="fashion-mnist", root=fmnist_root)
    assert again.state == "already present"
    assert again.splits == {"train": 60000, "test": 10000}
    # torchvision's own class reads the layout with download=False
    import torchvision

    tv = torchvision.datasets.FashionMNIST(str(fmnist_root), train=False, download=False)
    assert len(tv) == 10000 and int(tv.targets[0]) == 9  # the first test image: ankle boot
    ds = open_dataset("fashion-mnist", fmnist_root, "test")
    image, label = ds[0]
    assert image.shape == (28, 28, 3) and image.dtype == np.uint8 and label == 9
    assert (image[..., 0] == np.asarray(tv.data[0])).all()
    assert ds.classes[label] == "Ankle boot"


def test_a_truly_corrupt_gz_is_refused(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    labels = gzip.decompress((FASHION_MNIST_DIR / FMNIST_FILES[3]).read_bytes())
    broken = bytearray(labels)
    broken[100] ^= 0xFF  # one flipped label: still valid gzip, wrong content
    (source / FMNIST_FILES[3]).write_bytes(gzip.compress(bytes(broken)))
    for name in FMNIST_FILES[:3]:
        (source / name).symlink_to(FASHION_MNIST_DIR / name)
    root = tmp_path / "data"
    with pytest.raises(ChecksumError, match=r"t10k-labels-idx1-ubyte\.gz fails verification"):
        fetch_dataset(name="fashion-mnist", root=root, from_dir=source)
    assert not (root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").exists()
    with pytest.raises(ToolboxError, match="is incomplete"):
        open_dataset("fashion-mnist", root, "test")
    # another, good copy further down the folder is found and used; the corrupt one is not
    (source / "zz").mkdir()
    (source / "zz" / FMNIST_FILES[3]).symlink_to(FASHION_MNIST_DIR / FMNIST_FILES[3])
    result = fetch_dataset(name="fashion-mnist", root=root, from_dir=source)
    assert result.files[-1].source == str(source / "zz" / FMNIST_FILES[3])
    assert open_dataset("fashion-mnist", root, "test").targets[:3].tolist() == [9, 2, 1]


def test_export_folder_writes_an_imagefolder_tree(fmnist_root, tmp_path, invoke):
    dest = tmp_path / "png"
    result = invoke("datasets", "fetch", "fashion-mnist", "--root", fmnist_root,
                    "--export-folder", dest, "--export-max", "40", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["state"] == "already present"
    assert report["export"]["counts"] == {"train": 40, "test": 40}
    train = scan_image_folder(dest / "train")
    assert len(train.samples) == 40 and set(train.classes) <= set(report["export"]["classes"])
    assert "T-shirt_top" in report["export"]["classes"]  # '/' is not a folder name
    ds = open_dataset("fashion-mnist", fmnist_root, "test")
    image, label = ds[0]
    written = read_image(dest / "test" / "Ankle boot" / "00000.png")
    assert (written == image).all() and label == 9
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    # an existing export is never overwritten
    again = invoke("datasets", "fetch", "fashion-mnist", "--root", fmnist_root,
                   "--export-folder", dest)
    assert again.exit_code == 1 and "not empty" in again.stderr


def test_list_shows_presence_under_root(fmnist_root, invoke):
    result = invoke("datasets", "list", "--root", fmnist_root, "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["fashion-mnist"]["present"] is True and rows["mnist"]["present"] is False
    assert rows["cifar10"]["train_size"] == 50000
    full = invoke("datasets", "list", "--root", fmnist_root, "--verify", "--json")
    assert {r["name"]: r["state"] for r in json.loads(full.stdout)}["fashion-mnist"] == "present"
    human = invoke("datasets", "list", "--root", fmnist_root)
    assert human.exit_code == 0 and "fashion-mnist" in human.stdout and "license" in human.stdout


def test_open_dataset_errors_point_at_the_fetch_command(tmp_path):
    with pytest.raises(ToolboxError) as err:
        open_dataset("cifar10", tmp_path, "train")
    assert err.value.hint == f"tb datasets fetch cifar10 --root {tmp_path}"
    with pytest.raises(ToolboxError, match="did you mean"):
        open_dataset("cifar-10", tmp_path, "train")
    with pytest.raises(ToolboxError, match="unknown split"):
        open_dataset("cifar10", tmp_path, "val")


def test_fetch_cli_unknown_name_and_missing_dir(invoke, tmp_path):
    result = invoke("datasets", "fetch", "mnits", "--root", tmp_path)
    assert result.exit_code == 2 and "did you mean: mnist" in result.stderr  # a usage error
    result = invoke("datasets", "fetch", "mnist", "--root", tmp_path, "--from-dir",
                    tmp_path / "nope")
    assert result.exit_code == 2


@pytest.mark.slow
def test_tb_fetches_through_a_mirror_then_finetune_trains_on_it(tmp_path, tb_subprocess,
                                                                 invoke, monkeypatch):
    """The installed `tb`, pointed at a registry file and a user --mirror, fetches the data set;
    then `tb finetune --dataset` trains on it."""
    data = tiny_data()
    with FileServer({f"/m/{n}": b for n, b in data.files.items()}) as server:
        registry = data.registry(tmp_path / "registry.json", ["http://127.0.0.1:9/unused/"])
        env = {REGISTRY_ENV: str(registry)}
        root = tmp_path / "data"
        proc = tb_subprocess("datasets", "fetch", "tiny-cifar10", "--root", root,
                             "--mirror", f"{server.url}/m/", "--json", env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["state"] == "fetched" and report["splits"]["test"] == CIFAR_TEST
        assert report["files"][0]["source"] == f"{server.url}/m/tiny-cifar-10-python.tar.gz"
        assert report["files"][0]["verified_by"] == "MD5 of the file"
        assert report["files"][0]["mb_per_s"] > 0
        # the download went to a hidden folder and is gone; the torchvision layout remains
        assert sorted(p.name for p in root.iterdir()) == [".tb-datasets",
                                                          "tiny-cifar-10-batches-py"]
        shutil.rmtree(tmp_path / "data" / ".tb-datasets" / "staging", ignore_errors=True)
        listing = tb_subprocess("datasets", "list", "--root", root, "--json", env=env)
        rows = {r["name"]: r for r in json.loads(listing.stdout)}
        assert rows["tiny-cifar10"]["present"] is True
    monkeypatch.setenv(REGISTRY_ENV, str(registry))
    result = invoke("finetune", "--dataset", "tiny-cifar10", "--root", root, "--model",
                    "test_resnet", "--no-pretrained", "--epochs", "1", "--img-size", "32",
                    "--batch-size", "16", "--device", "cpu", "--workers", "0",
                    "--out", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["class_names"][:2] == ["airplane", "automobile"]
    assert len(run["epochs"]) == 1 and Path(run["model_file"]).is_file()
