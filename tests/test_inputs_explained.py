"""Nothing a newcomer gives is dropped without a word: every file in SRC is used or reported
with a reason, a bad augmenter argument names the augmenter, the argument and what it takes,
every augmenter imgaug exports is offered or refused with its reason, and an empty model
filter suggests close names."""

from __future__ import annotations

import inspect
import json

import pytest
from augment_helpers import make_class_folder
from inference_helpers import shared_run, write_folder

from toolbox.augment import AugmentSpecError, augmenter_names
from toolbox.augment._registry import _HIDDEN, _TEXT_CHOICES, get_augmenter_info, resolve_step
from toolbox.augment._spec import parse_inline


def test_files_that_are_not_images_are_reported_by_augment(tmp_path, invoke):
    make_class_folder(tmp_path / "src")
    (tmp_path / "src" / "notes.txt").write_text("labels")
    (tmp_path / "src" / "cat" / "README").write_text("about cats")
    result = invoke("augment", tmp_path / "src", tmp_path / "out", "--seed", "0",
                    "--workers", "1", "--json")
    assert result.exit_code == 0, result.output
    skipped = {s["path"]: s["reason"] for s in json.loads(result.stdout)["skipped"]}
    assert skipped == {"notes.txt": "not an image file (.txt)",
                       "cat/README": "not an image file (no extension)"}
    human = invoke("augment", tmp_path / "src", tmp_path / "out2", "--seed", "0",
                   "--workers", "1")
    assert "skipped notes.txt: not an image file (.txt)" in " ".join(human.stderr.split())


def test_predict_log_images_and_evaluate_say_why_a_file_is_not_used(tmp_path, invoke,
                                                                    tmp_path_factory):
    run = shared_run(tmp_path_factory.mktemp("trained"))
    data = write_folder(tmp_path / "data", 1)
    (tmp_path / "notes.txt").write_text("not a picture")
    result = invoke("predict", tmp_path / "notes.txt", data, "--run", run, "--json")
    assert result.exit_code == 0, result.output
    reasons = {s["reason"] for s in json.loads(result.stdout)["skipped"]}
    assert reasons == {"not an image file (.txt)"}
    (data / "notes.txt").write_text("not a picture")
    (data / "red" / "labels.csv").write_text("not a picture either")
    logged = invoke("log-images", data, "--tensorboard", tmp_path / "logs", "--json")
    assert logged.exit_code == 0, logged.output
    assert {"path": "notes.txt", "reason": "not an image file (.txt)"} in json.loads(
        logged.stdout)["skipped"]
    scored = invoke("evaluate", "--run", run, "--data", data, "--out", tmp_path / "eval",
                    "--no-tensorboard", "--json")
    assert scored.exit_code == 0, scored.output
    reasons = {s["file"].rsplit("/", 1)[-1]: s["reason"]
               for s in json.loads(scored.stdout)["skipped"]}
    assert reasons == {"labels.csv": "not an image file (.csv)"}


def test_a_bad_text_argument_names_the_augmenter_argument_and_values(invoke, tmp_path):
    (tmp_path / "src").mkdir()
    result = invoke("augment", tmp_path / "src", tmp_path / "out", "--aug",
                    "Affine(rotate=(-25, 25), mode='reflekt')")
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "--aug" in message and "Affine does not take mode='reflekt'" in message
    assert "constant, edge, symmetric, reflect, wrap" in message and "OpenCV" not in message


@pytest.mark.parametrize(("name", "param"), sorted(_TEXT_CHOICES))
def test_every_allowed_text_value_runs(name, param):
    """The table of allowed values agrees with imgaug: each one builds and augments."""
    import numpy as np

    from toolbox.augment import build_augmenter

    for value in _TEXT_CHOICES[(name, param)]:
        augmenter = build_augmenter(f"{name}({param}={value!r})")
        assert augmenter(image=np.zeros((24, 24, 3), np.uint8)).shape[2] == 3


def test_every_imgaug_augmenter_is_offered_or_refused_with_its_reason():
    import imgaug.augmenters as iaa

    offered = set(augmenter_names())
    for name, obj in vars(iaa).items():
        if not (inspect.isclass(obj) and issubclass(obj, iaa.Augmenter)):
            continue
        if name in offered:
            assert get_augmenter_info(name).name == name
            continue
        assert name in _HIDDEN, f"imgaug's {name} is neither offered nor refused"
        with pytest.raises(AugmentSpecError) as err:
            resolve_step(parse_inline(f"{name}()")[0])
        assert _HIDDEN[name] in err.value.message
    with pytest.raises(AugmentSpecError, match="use Identity"):
        resolve_step(parse_inline("Noop()")[0])


def test_an_empty_model_filter_suggests_close_names(invoke):
    result = invoke("models", "list", "--filter", "resnt", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert "did you mean: resnet" in result.stderr
