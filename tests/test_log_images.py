"""`tb log-images`: grids, batches and single images read back from the event files, data set
samples with their labels, and one end-to-end check through a real TensorBoard server."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import FASHION_MNIST_DIR
from PIL import Image

from toolbox.datasets._fetch import fetch_dataset
from toolbox.errors import ToolboxError
from toolbox.log_images import log_images


def _events(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def _decode(event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


@pytest.fixture
def mixed(tmp_path) -> Path:
    """RGB 60x40, grayscale 30x30 and RGBA 50x20 images, one in a sub-folder."""
    src = tmp_path / "imgs"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(np.full((40, 60, 3), (200, 10, 10), np.uint8)).save(src / "a_rgb.png")
    Image.fromarray(np.full((30, 30), 90, np.uint8)).save(src / "b_gray.png")
    rgba = np.zeros((20, 50, 4), np.uint8)
    rgba[...] = (10, 120, 30, 0)  # fully transparent: the colour must still come through
    Image.fromarray(rgba, "RGBA").save(src / "sub" / "c_rgba.png")
    (src / "broken.png").write_bytes(b"not a png")
    return src


@pytest.fixture(scope="module")
def fmnist_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fmnist")
    fetch_dataset(name="fashion-mnist", root=root, from_dir=FASHION_MNIST_DIR)
    return root


def test_grid_of_mixed_sizes_and_channels(mixed, tmp_path):
    logdir = tmp_path / "logs"
    result = log_images(logdir=logdir, src=mixed, nrow=2, padding=2, step=5)
    assert [s.reason for s in result.skipped] == ["not an image"]
    [written] = result.written
    # make_grid: cells of the first image's size (40x60) + 2 px padding, 2 per row, 2 rows
    assert (written.width, written.height, written.images) == (2 * 62 + 2, 2 * 42 + 2, 3)
    acc = _events(logdir)
    assert acc.Tags()["images"] == ["images"]
    [event] = acc.Images("images")
    assert (event.width, event.height, event.step) == (126, 86, 5)
    grid = _decode(event)
    assert tuple(grid[22, 32]) == (200, 10, 10)  # the RGB image, top-left cell
    assert tuple(grid[22, 94]) == (90, 90, 90)  # grayscale replicated to three channels
    assert tuple(grid[64, 32]) == (10, 120, 30)  # RGBA: alpha dropped, colour kept
    assert result.tensorboard_command == f"tensorboard --logdir {logdir}"


def test_each_mode_tags_by_relative_path_and_fits_size(mixed, tmp_path, invoke):
    logdir = tmp_path / "logs"
    result = invoke("log-images", mixed, "--logdir", logdir, "--mode", "each", "--tag", "look",
                    "--size", "32x16", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    tags = sorted(w["tag"] for w in report["written"])
    assert tags == ["look/a_rgb.png", "look/b_gray.png", "look/sub/c_rgba.png"]
    acc = _events(logdir)
    assert sorted(acc.Tags()["images"]) == tags
    for tag in tags:
        [event] = acc.Images(tag)
        assert (event.width, event.height) == (32, 16)
    assert report["skipped"][0]["reason"] == "not an image"


def test_tensorboard_option_names_the_log_dir_like_every_other_command(mixed, tmp_path, invoke):
    logdir = tmp_path / "tb logs"
    result = invoke("log-images", mixed, "--tensorboard", logdir, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["logdir"] == str(logdir)
    [event] = _events(logdir).Images("images")
    assert event.width > 0 and event.height > 0


def test_each_mode_without_size_keeps_sizes_and_globs_work(mixed, tmp_path, invoke):
    logdir = tmp_path / "logs"
    result = invoke("log-images", str(mixed / "*.png"), "--logdir", logdir, "--mode", "each")
    assert result.exit_code == 0, result.stderr
    assert f"view it: tensorboard --logdir {logdir}" in " ".join(result.stdout.split())
    acc = _events(logdir)
    sizes = {t: (acc.Images(t)[0].width, acc.Images(t)[0].height) for t in acc.Tags()["images"]}
    assert sizes == {"a_rgb.png": (60, 40), "b_gray.png": (30, 30)}


def test_batch_of_dataset_samples_with_labels(fmnist_root, tmp_path, invoke):
    logdir = tmp_path / "logs"
    result = invoke("log-images", "--dataset", "fashion-mnist", "--root", fmnist_root,
                    "--split", "test", "--max", "10", "--mode", "batch", "--logdir", logdir)
    assert result.exit_code == 0, result.stderr
    acc = _events(logdir)
    [event] = acc.Images("fashion-mnist/test")
    # add_images tiles the batch itself: 8 per row, no padding
    assert (event.width, event.height) == (8 * 28, 2 * 28)
    [text] = acc.Tensors("fashion-mnist/test/labels/text_summary")
    labels = text.tensor_proto.string_val[0].decode()
    assert labels.startswith("Ankle boot | Pullover | Trouser")


def test_each_mode_puts_dataset_labels_in_tags(fmnist_root, tmp_path):
    result = log_images(logdir=tmp_path / "logs", dataset="fashion-mnist", root=fmnist_root,
                        split="test", mode="each", max_images=3)
    assert [w.tag for w in result.written] == ["fashion-mnist/test/00000_Ankle boot",
                                               "fashion-mnist/test/00001_Pullover",
                                               "fashion-mnist/test/00002_Trouser"]
    acc = _events(tmp_path / "logs")
    assert len(acc.Tags()["images"]) == 3
    assert acc.Images("fashion-mnist/test/00000_Ankle boot")[0].width == 28


def test_failures_are_one_line_with_a_hint(tmp_path, mixed, invoke):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("log-images", empty, "--logdir", tmp_path / "l")
    assert result.exit_code == 1 and "no images found" in result.stderr
    result = invoke("log-images", "--dataset", "cifar10", "--root", tmp_path, "--logdir",
                    tmp_path / "l")
    assert result.exit_code == 1
    assert f"tb datasets fetch cifar10 --root {tmp_path}" in " ".join(result.stderr.split())
    assert invoke("log-images", mixed, "--logdir", tmp_path / "l", "--mode", "tile"
                  ).exit_code == 2
    assert invoke("log-images", mixed, "--dataset", "mnist", "--logdir", tmp_path / "l"
                  ).exit_code == 2
    assert invoke("log-images", mixed, "--logdir", tmp_path / "l", "--size", "0x3"
                  ).exit_code == 2
    with pytest.raises(ToolboxError, match="either image files"):
        log_images(logdir=tmp_path / "l")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read()


@pytest.mark.slow
def test_real_tensorboard_serves_the_image_and_a_scalar(mixed, tmp_path, tb_subprocess):
    logdir = tmp_path / "logs"
    proc = tb_subprocess("log-images", mixed, "--logdir", logdir, "--nrow", "3")
    assert proc.returncode == 0, proc.stderr
    assert f"tensorboard --logdir {logdir}" in " ".join(proc.stdout.split())
    from toolbox.tensorboard import summary_writer

    with summary_writer(logdir) as writer:
        for step, value in enumerate([1.0, 0.5, 0.25]):
            writer.add_scalar("loss", value, step)
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(logdir),
         "--port", str(port), "--host", "127.0.0.1", "--load_fast", "false",
         "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/data/plugin"
        deadline = time.monotonic() + 60
        tags: dict = {}
        while time.monotonic() < deadline:
            try:
                tags = json.loads(_get(f"{base}/images/tags"))
                if tags.get(".", {}).get("images"):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert "images" in tags["."]
        [entry] = json.loads(_get(f"{base}/images/images?run=.&tag=images&sample=0"))
        png = _get(f"{base}/images/individualImage?{entry['query']}")
        image = Image.open(io.BytesIO(png))
        # three 60x40 cells (first image's size) in one row with 2 px padding
        assert image.size == (3 * 62 + 2, 42 + 2)
        scalars = json.loads(_get(f"{base}/scalars/scalars?run=.&tag=loss"))
        assert [(s[1], s[2]) for s in scalars] == [(0, 1.0), (1, 0.5), (2, 0.25)]
    finally:
        server.terminate()
        server.wait(timeout=20)
