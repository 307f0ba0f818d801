"""The shared image reader: channel rules, orientation, bad files, listing, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toolbox.errors import ToolboxError
from toolbox.images import (
    ImageReadError,
    collect_images,
    read_image,
    read_mask,
    scan_image_folder,
    write_image,
)


def _gradient(h=12, w=20) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 10, y * 20, (x + y) * 5], axis=-1).astype(np.uint8)


def test_rgb_roundtrip(tmp_path):
    img = _gradient()
    write_image(tmp_path / "a.png", img)
    assert np.array_equal(read_image(tmp_path / "a.png"), img)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "1"])
def test_modes_become_rgb(tmp_path, mode):
    Image.fromarray(_gradient()).convert(mode).save(tmp_path / "m.png")
    out = read_image(tmp_path / "m.png")
    assert out.shape == (12, 20, 3) and out.dtype == np.uint8
    if mode in ("L", "LA"):
        assert np.array_equal(out[..., 0], out[..., 1])


def test_palette_uses_the_palette(tmp_path):
    img = Image.new("P", (4, 4))
    img.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    img.putpixel((0, 0), 1)
    img.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert tuple(out[0, 0]) == (0, 0, 255) and tuple(out[1, 1]) == (255, 0, 0)


def test_16bit_is_scaled(tmp_path):
    arr = np.full((5, 6), 65535, np.uint16)
    arr[0, 0] = 257 * 100
    Image.fromarray(arr).save(tmp_path / "d.png")
    out = read_image(tmp_path / "d.png")
    assert out[1, 1, 0] == 255 and out[0, 0, 0] == 100


def test_exif_rotation_is_applied(tmp_path):
    img = Image.fromarray(_gradient(10, 30))  # wide
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert read_image(tmp_path / "r.jpg").shape == (30, 10, 3)  # tall, as a viewer shows it


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "empty file"), (b"not an image at all", "not an image"),
])
def test_bad_files_have_reasons(tmp_path, content, reason):
    (tmp_path / "bad.png").write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        read_image(tmp_path / "bad.png")
    assert info.value.reason.startswith(reason)


def test_truncated_jpeg(tmp_path):
    write_image(tmp_path / "t.jpg", _gradient(64, 64))
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as info:
        read_image(tmp_path / "t.jpg")
    assert "truncated" in info.value.reason


def test_mask_keeps_class_ids(tmp_path):
    mask = np.array([[0, 1], [2, 3]], np.uint8)
    img = Image.fromarray(mask, mode="L").convert("P")
    img.save(tmp_path / "mask.png")
    assert np.array_equal(read_mask(tmp_path / "mask.png"), mask)


def test_collect_folder_file_glob(tmp_path):
    for rel in ("cats/a.png", "dogs/b.jpg", "dogs/deep/c.png", ".hidden/d.png", "notes.txt"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    rels = [str(f.relative) for f in collect_images(tmp_path)]
    assert rels == ["cats/a.png", "dogs/b.jpg", "dogs/deep/c.png"]
    assert [str(f.relative) for f in collect_images(tmp_path / "cats/a.png")] == ["a.png"]
    globbed = [str(f.relative) for f in collect_images(f"{tmp_path}/dogs/**/*.png")]
    assert globbed == ["deep/c.png"]
    with pytest.raises(ToolboxError):
        collect_images(tmp_path / "missing")


def test_scan_image_folder_errors(tmp_path):
    with pytest.raises(ToolboxError, match="no class sub-folders"):
        scan_image_folder(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(ToolboxError, match="holds no images"):
        scan_image_folder(tmp_path)
    write_image(tmp_path / "a" / "x.png", _gradient())
    (tmp_path / "b").mkdir()
    write_image(tmp_path / "b" / "y.png", _gradient())
    data = scan_image_folder(tmp_path)
    assert data.classes == ["a", "b"] and [i for _, i in data.samples] == [0, 1]


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    import imageio.v3 as iio

    write_image(tmp_path / "keep.png", _gradient())
    before = (tmp_path / "keep.png").read_bytes()

    def half_write(path, *args, **kwargs):
        Path(path).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(iio, "imwrite", half_write)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "keep.png", _gradient())
    assert (tmp_path / "keep.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]


def test_glob_match_that_links_outside_its_root(tmp_path):
    outside = tmp_path / "elsewhere" / "real.png"
    write_image(outside, _gradient())
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "link.png").symlink_to(outside)
    files = collect_images(f"{tmp_path}/imgs/*.png")
    assert [str(f.relative) for f in files] == ["link.png"]
    assert files[0].path == outside.resolve()


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "1", "I;16", "CMYK"])
def test_pillow_fast_path_agrees_with_imageio(tmp_path, mode):
    """Common files skip imageio (a third of the CPU time); the arrays must be the same."""
    import imageio.v3 as iio

    from toolbox.images import as_rgb_uint8

    image = (Image.fromarray(np.arange(12 * 20, dtype=np.uint16).reshape(12, 20) * 250)
             if mode == "I;16" else Image.fromarray(_gradient()).convert(mode))
    compared = 0
    for suffix in (".png", ".jpg", ".tif", ".webp", ".gif", ".bmp"):
        path = tmp_path / f"x{suffix}"
        try:
            image.save(path)
        except (OSError, ValueError, KeyError):  # not every format takes every mode
            continue
        expected = as_rgb_uint8(np.asarray(iio.imread(path, plugin="pillow", rotate=True,
                                                      index=0)))
        out = read_image(path)
        assert np.array_equal(out, expected) and out.flags.writeable, suffix
        compared += 1
    assert compared >= 3


def test_upright_exif_orientation_reads_as_is(tmp_path):
    img = Image.fromarray(_gradient(10, 30))
    exif = Image.Exif()
    exif[0x0112] = 1  # already upright
    img.save(tmp_path / "u.jpg", exif=exif)
    assert read_image(tmp_path / "u.jpg").shape == (10, 30, 3)
