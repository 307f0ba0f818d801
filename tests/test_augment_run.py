"""`tb augment SRC OUT`: the folder runner, through the service, the CLI and a real `tb`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from augment_helpers import make_class_folder, output_files, photo, tree_hashes, write_png

from toolbox.augment import augment_folder, build_augmenter
from toolbox.errors import ToolboxError
from toolbox.images import read_image, read_mask

SPEC = "Fliplr(0.5); Affine(rotate=(-25, 25)); AdditiveGaussianNoise(scale=(0, 20))"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    make_class_folder(root, per_class=3)
    return root


# ----------------------------------------------------------------- reproducible, parallel
@pytest.mark.slow
def test_same_seed_same_bytes_with_1_and_2_workers_and_inputs_unchanged(src, tmp_path):
    before = tree_hashes(src)
    one = augment_folder(src, tmp_path / "w1", spec=SPEC, seed=11, copies=2, workers=1)
    two = augment_folder(src, tmp_path / "w2", spec=SPEC, seed=11, copies=2, workers=2)
    assert tree_hashes(src) == before
    assert (one.workers, two.workers) == (1, 2)
    assert one.images_written == two.images_written == 12
    a, b = output_files(tmp_path / "w1"), output_files(tmp_path / "w2")
    assert len(a) == 12 and a == b
    # Class folders stay class folders, names follow NAME_aug{k}.EXT with the input's format.
    assert "cat/astronaut0_aug0.png" in a and "dog/chelsea1_aug1.jpg" in a
    # Outputs depend on the seed and differ between copies.
    assert a["cat/astronaut0_aug0.png"] != a["cat/astronaut0_aug1.png"]
    other = augment_folder(src, tmp_path / "w3", spec=SPEC, seed=12, workers=1)
    assert output_files(tmp_path / "w3")["cat/astronaut0_aug0.png"] != a[
        "cat/astronaut0_aug0.png"]
    assert other.images_read == 6


def test_output_depends_only_on_seed_path_and_copy(src, tmp_path):
    """Processing a subset (another order, other neighbours) gives the same bytes per file."""
    full = augment_folder(src, tmp_path / "all", spec=SPEC, seed=3, workers=1)
    assert full.images_written == 6
    sub = augment_folder(str(src / "dog" / "*.jpg"), tmp_path / "dogs", spec=SPEC, seed=3,
                         workers=1)
    assert sub.images_written == 3
    # A glob keeps paths relative to its fixed part (src/dog), so compare by relative path.
    dogs = output_files(tmp_path / "dogs")
    assert dogs and all(not k.startswith("dog/") for k in dogs)
    single = augment_folder(src / "cat" / "coffee2.png", tmp_path / "one", spec=SPEC,
                            seed=3, workers=1)
    assert single.images_written == 1
    assert (tmp_path / "one" / "coffee2_aug0.png").is_file()


def test_pipeline_yaml_round_trip_gives_the_same_images(src, tmp_path, invoke):
    result = invoke("augment", src, tmp_path / "a", "--aug", SPEC + "; Sometimes(0.5, "
                    "OneOf([GaussianBlur(sigma=(0, 2)), Dropout([0.05, 0.1])]))",
                    "--seed", "5", "--workers", "1")
    assert result.exit_code == 0, result.stderr
    written = yaml.safe_load((tmp_path / "a" / "pipeline.yaml").read_text())
    assert written["seed"] == 5
    assert written["pipeline"][1] == {"Affine": {"rotate": {"uniform": [-25, 25]}}}
    assert written["pipeline"][3]["Sometimes"]["then_list"]["OneOf"]["children"][1] == {
        "Dropout": {"p": {"choice": [0.05, 0.1]}}}
    # Fed back without --seed: the file's seed and pipeline give byte-identical images.
    result = invoke("augment", src, tmp_path / "b", "--pipeline",
                    tmp_path / "a" / "pipeline.yaml", "--workers", "1")
    assert result.exit_code == 0, result.stderr
    assert output_files(tmp_path / "a") == output_files(tmp_path / "b")
    assert len(output_files(tmp_path / "b")) == 6


def test_random_seed_is_chosen_reported_and_recorded(src, tmp_path, invoke):
    result = invoke("augment", src, tmp_path / "out", "--preset", "light", "--workers", "1",
                    "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["seed_source"] == "random"
    assert f"seed {report['seed']} chosen at random" in result.stderr
    recorded = yaml.safe_load((tmp_path / "out" / "pipeline.yaml").read_text())
    assert recorded["seed"] == report["seed"]
    again = augment_folder(src, tmp_path / "again", spec="light", seed=report["seed"],
                           workers=1)
    assert again.images_written == 6
    assert output_files(tmp_path / "out") == output_files(tmp_path / "again")


# ------------------------------------------------------------------------ awkward inputs
def test_grayscale_rgba_palette_16bit_and_exif_rotated_inputs(tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    rgb = photo("coffee", size=(40, 60))
    gray = rgb[:, :, 0]
    Image.fromarray(gray, "L").save(src / "gray.png")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 100, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(src / "rgba.png")
    palette = Image.fromarray(rgb).quantize(colors=16)
    palette.save(src / "palette.png")
    deep = (gray.astype(np.uint16) * 257)
    Image.fromarray(deep).save(src / "deep16.png")
    assert Image.open(src / "deep16.png").mode.startswith("I")
    # Stored 40x80, top half red, bottom half blue; EXIF orientation 6 = rotate 90° clockwise
    # to display, so it must come out 80 high, 40 wide, blue on the left, red on the right.
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:20, :, 0] = 255
    stored[20:, :, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(src / "rotated.jpg", exif=exif, quality=95)

    # An animated GIF: its first frame.
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])

    report = augment_folder(src, tmp_path / "out", spec="Identity()", seed=0, workers=1,
                            image_format="png")
    assert report.images_written == 6 and not report.skipped
    out = tmp_path / "out"
    g = read_image(out / "gray_aug0.png")
    assert g.shape == (40, 60, 3) and np.array_equal(g[:, :, 1], gray)
    assert np.array_equal(read_image(out / "rgba_aug0.png"), rgb)  # alpha dropped
    assert np.array_equal(read_image(out / "palette_aug0.png"),
                          np.asarray(palette.convert("RGB")))  # palette expanded
    assert np.array_equal(read_image(out / "deep16_aug0.png")[:, :, 0], gray)  # 16 -> 8 bit
    first = np.asarray(Image.open(src / "anim.gif").convert("RGB"))
    assert np.array_equal(read_image(out / "anim_aug0.png"), first)
    r = read_image(out / "rotated_aug0.png")
    assert r.shape == (80, 40, 3)
    assert r[:, :15, 2].mean() > 200 and r[:, :15, 0].mean() < 50
    assert r[:, 25:, 0].mean() > 200 and r[:, 25:, 2].mean() < 50


def test_bad_files_are_skipped_with_reasons_and_the_run_goes_on(src, tmp_path, invoke):
    good = (src / "cat" / "astronaut0.png").read_bytes()
    (src / "cat" / "truncated.png").write_bytes(good[: len(good) // 2])
    (src / "cat" / "notes.jpg").write_text("this is not a picture")
    (src / "dog" / "empty.png").write_bytes(b"")
    result = invoke("augment", src, tmp_path / "out", "--seed", "1", "--workers", "1")
    assert result.exit_code == 0, result.stderr
    assert "3 file(s) skipped" in result.stderr
    assert "skipped cat/notes.jpg: not an image" in result.stderr
    assert "skipped dog/empty.png: empty file" in result.stderr
    assert len(output_files(tmp_path / "out")) == 6
    report = json.loads(invoke("augment", src, tmp_path / "out2", "--seed", "1",
                               "--workers", "1", "--json").stdout)
    assert report["images_found"] == 9 and report["images_read"] == 6
    assert report["images_written"] == 6
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert reasons == {"cat/notes.jpg": "not an image", "cat/truncated.png": "truncated file",
                       "dog/empty.png": "empty file"}
    assert report["skip_reasons"] == {"not an image": 1, "truncated file": 1, "empty file": 1}


def test_exit_code_is_1_when_nothing_could_be_written(tmp_path, invoke, tb_subprocess):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(b"")
    (src / "b.jpg").write_text("nope")
    result = invoke("augment", src, tmp_path / "out", "--workers", "1")
    assert result.exit_code == 1
    assert "nothing could be written" in result.stderr and "Traceback" not in result.stderr
    assert output_files(tmp_path / "out") == {}
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("augment", empty, tmp_path / "out2")
    assert result.exit_code == 1 and "no images found" in result.stderr


@pytest.mark.parametrize("inside", [".", "sub", "cat/deeper"])
def test_out_equal_to_or_inside_src_is_refused(src, tmp_path, invoke, inside):
    before = tree_hashes(src)
    result = invoke("augment", src, src / inside, "--workers", "1")
    assert result.exit_code == 1
    assert "the source folder" in result.stderr
    assert tree_hashes(src) == before
    with pytest.raises(ToolboxError, match="source folder"):
        augment_folder(str(src / "**" / "*.png"), src / "cat" / "x", workers=1)
    with pytest.raises(ToolboxError, match="same as the source folder"):
        augment_folder(src / "cat" / "coffee2.png", src / "cat", workers=1)


def test_skip_existing_resumes_with_the_recorded_seed(src, tmp_path):
    out = tmp_path / "out"
    first = augment_folder(src, out, spec=SPEC, workers=1, copies=2)
    assert first.seed_source == "random"
    files = output_files(out)
    # An interrupted run: two outputs missing, a temporary file left by the atomic writer.
    (out / "cat" / "astronaut0_aug1.png").unlink()
    (out / "dog" / "chelsea1_aug0.jpg").unlink()
    resumed = augment_folder(src, out, spec=SPEC, workers=1, copies=2, skip_existing=True)
    assert resumed.seed == first.seed and resumed.seed_source.startswith("resumed")
    assert resumed.images_written == 2 and resumed.already_done == 4
    assert resumed.images_read == 2
    assert output_files(out) == files
    again = augment_folder(src, out, spec=SPEC, workers=1, copies=2, skip_existing=True)
    assert again.images_written == 0 and again.already_done == 6 and not again.nothing_written
    with pytest.raises(ToolboxError, match="another pipeline"):  # never mixed with this run
        augment_folder(src, out, spec="light", workers=1, copies=2, skip_existing=True)
    assert output_files(out) == files


def test_include_original_and_format_and_quality(src, tmp_path):
    report = augment_folder(src, tmp_path / "out", spec="Fliplr(1.0)", seed=0, workers=1,
                            include_original=True, image_format="jpg", quality=50)
    assert report.images_written == 6 and report.originals_copied == 6
    out = tmp_path / "out"
    for original in src.rglob("*.*"):
        rel = original.relative_to(src)
        assert (out / rel).read_bytes() == original.read_bytes()
        assert (out / rel.parent / f"{rel.stem}_aug0.jpg").is_file()
    low = (out / "cat" / "astronaut0_aug0.jpg").stat().st_size
    augment_folder(src, tmp_path / "hq", spec="Fliplr(1.0)", seed=0, workers=1,
                   image_format="jpg", quality=98)
    assert (tmp_path / "hq" / "cat" / "astronaut0_aug0.jpg").stat().st_size > low


# ---------------------------------------------------------------------------------- masks
def _segmentation_folder(tmp_path: Path) -> tuple[Path, Path]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    for index, name in enumerate(("chelsea", "rocket")):
        image = photo(name, size=(48, 64))
        mask = np.zeros((48, 64), np.uint8)
        mask[10:30, 5:25] = 1
        mask[20:44, 40:60] = 3 + index
        write_png(images / "train" / f"{name}.jpg", image)
        write_png(masks / "train" / f"{name}.png", mask)
    write_png(images / "train" / "nomask.png", photo("coffee", size=(48, 64)))
    return images, masks


def test_masks_get_the_geometric_transforms_only(tmp_path, invoke):
    images, masks = _segmentation_folder(tmp_path)
    result = invoke("augment", images, tmp_path / "out", "--masks", masks, "--aug",
                    "Fliplr(1.0); Multiply(0.5)", "--format", "png", "--seed", "0",
                    "--workers", "1", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images_written"] == 2 and report["masks_written"] == 2
    assert report["skipped"] == [{"path": "train/nomask.png",
                                  "reason": "no mask with the same name"}]
    for name in ("chelsea", "rocket"):
        mask = read_mask(masks / "train" / f"{name}.png")
        out_mask = read_mask(tmp_path / "out" / "masks" / "train" / f"{name}_aug0.png")
        assert np.array_equal(out_mask, np.fliplr(mask))  # flipped, not darkened
        image = read_image(images / "train" / f"{name}.jpg")
        out_image = read_image(tmp_path / "out" / "images" / "train" / f"{name}_aug0.png")
        expected = (np.fliplr(image).astype(float) * 0.5)
        assert np.abs(out_image.astype(float) - expected).max() <= 1.0


def test_masks_follow_rotations_and_keep_class_ids(tmp_path):
    images, masks = _segmentation_folder(tmp_path)
    report = augment_folder(images, tmp_path / "out", masks=masks, seed=2, workers=1,
                            spec=str(Path(__file__).parent.parent / "examples" / "pipelines"
                                     / "segmentation.yaml"), copies=2)
    assert report.masks_written == 4
    mask = read_mask(masks / "train" / "chelsea.png")
    for k in range(2):
        out_mask = read_mask(tmp_path / "out" / "masks" / "train" / f"chelsea_aug{k}.png")
        assert out_mask.shape == mask.shape
        assert set(np.unique(out_mask)) <= {0, 1, 3}  # nearest-neighbour: ids stay ids
    # Deterministic per (seed, path, copy): the masks match a direct imgaug call.
    from imgaug.augmentables.segmaps import SegmentationMapsOnImage

    from toolbox.augment._worker import derive_seed

    seq = build_augmenter(str(Path(__file__).parent.parent / "examples" / "pipelines"
                              / "segmentation.yaml"))
    seq.seed_(derive_seed(2, "train/chelsea.jpg", 1))
    image = read_image(images / "train" / "chelsea.jpg")
    _, seg = seq(image=image, segmentation_maps=SegmentationMapsOnImage(mask, image.shape))
    assert np.array_equal(
        seg.get_arr(), read_mask(tmp_path / "out" / "masks" / "train" / "chelsea_aug1.png"))


# --------------------------------------------------------------------- preview, tensorboard
@pytest.mark.slow
def test_preview_png_and_tensorboard_image(src, tmp_path, invoke):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    preview = tmp_path / "preview.png"
    logdir = tmp_path / "tb"
    result = invoke("augment", src, tmp_path / "out", "--seed", "0", "--copies", "2",
                    "--preview", preview, "--tensorboard", logdir, "--workers", "1")
    assert result.exit_code == 0, result.stderr
    grid = read_image(preview)
    # 4 rows (originals) x 3 columns (original + 2 copies) of 48x64 photos, 2 px padding.
    assert grid.shape == (4 * 50 + 2, 3 * 66 + 2, 3)
    first_original = read_image(sorted((src / "cat").iterdir())[0])
    assert np.abs(grid[2:50, 2:66].astype(int) - first_original.astype(int)).mean() < 3
    acc = EventAccumulator(str(logdir), size_guidance={"images": 0})
    acc.Reload()
    assert "augment/preview" in acc.Tags()["images"]
    event = acc.Images("augment/preview")[0]
    assert (event.height, event.width) == grid.shape[:2]
    import io

    from PIL import Image
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(event.encoded_image_string))), grid)


# ------------------------------------------------------------------------------------ CLI
@pytest.mark.slow
def test_cli_table_and_real_tb_subprocess(src, tmp_path, invoke, tb_subprocess):
    result = invoke("augment", src, tmp_path / "out", "--preset", "heavy", "--seed", "2",
                    "--workers", "1")
    assert result.exit_code == 0, result.stderr
    for line in ("images read", "augmented images written", "images/s", "2 (--seed)"):
        assert line in result.stdout
    proc = tb_subprocess("augment", src, tmp_path / "sub", "--preset", "heavy", "--seed", "2",
                         "--workers", "2", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["workers"] == 2 and report["images_written"] == 6
    assert output_files(tmp_path / "out") == output_files(tmp_path / "sub")
    bad = tb_subprocess("augment", src, tmp_path / "bad", "--aug", "Affine(rotat=3)",
                        timeout=120)
    assert bad.returncode == 2  # a bad --aug value is a usage error
    assert "unknown parameter 'rotat'" in bad.stderr and "Traceback" not in bad.stderr


def test_interrupted_run_leaves_no_partial_files_and_resumes(src, tmp_path, monkeypatch):
    import toolbox.augment._worker as run
    from toolbox.fileio import atomic_path

    real_write = run.write_image
    calls = []

    def interrupted(dest, array, quality=None):
        calls.append(dest)
        if len(calls) == 4:  # Ctrl-C in the middle of the 4th write
            with atomic_path(dest) as tmp:
                Path(tmp).write_bytes(b"half an image")
                raise KeyboardInterrupt
        return real_write(dest, array, quality=quality)

    monkeypatch.setattr(run, "write_image", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        augment_folder(src, out, spec=SPEC, seed=4, workers=1)
    on_disk = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert len(on_disk) == 4 and "pipeline.yaml" in on_disk  # 3 images, no temp files
    assert all(read_image(p).shape == (48, 64, 3) for p in out.rglob("*_aug0.*"))
    monkeypatch.setattr(run, "write_image", real_write)
    resumed = augment_folder(src, out, spec=SPEC, workers=1, skip_existing=True)
    assert resumed.seed == 4 and resumed.images_written == 3 and resumed.already_done == 3
    augment_folder(src, tmp_path / "clean", spec=SPEC, seed=4, workers=1)
    assert output_files(out) == output_files(tmp_path / "clean")


def test_skip_existing_with_a_broken_record_asks_for_the_seed(tmp_path):
    from toolbox.images import write_image

    src, out = tmp_path / "src", tmp_path / "out"
    write_image(src / "a.png", np.zeros((8, 8, 3), np.uint8))
    out.mkdir()
    (out / "pipeline.yaml").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ToolboxError, match="cannot resume"):
        augment_folder(src, out, spec="Fliplr(0.5)", skip_existing=True, workers=1)
    report = augment_folder(src, out, spec="Fliplr(0.5)", skip_existing=True, seed=3, workers=1)
    assert report.images_written == 1
