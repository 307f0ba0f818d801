"""Commands `predict` and `evaluate`: use and judge a model trained by `tb finetune`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from toolbox.cli import render
from toolbox.cli.errors import handle_errors
from toolbox.cli.options import (
    AmpOpt,
    CamLayerOpt,
    CamOpt,
    CheckpointOpt,
    DatasetOpt,
    DeviceOpt,
    ForwardBatchOpt,
    JsonOpt,
    LabelColumnOpt,
    LabelsOpt,
    LoaderWorkersOpt,
    LogdirOpt,
    PathColumnOpt,
    RootOpt,
    RunOpt,
    SplitColumnOpt,
)

if TYPE_CHECKING:
    from toolbox.inference import EvalResult, PredictResult
    from toolbox.sources import SkippedFile

PretrainedModelOpt = Annotated[str | None, typer.Option(
    "--model", help="A pretrained timm or torchvision model instead of a run: predicts its own "
                    "classes (ImageNet's), e.g. tf_efficientnet_lite0 (weights ship with tb).",
    show_default=False)]


def _model_source(run: Path | None, checkpoint: Path | None, model: str | None = None, *,
                  takes_model: bool = False) -> None:
    given = [flag for flag, value in (("--run", run), ("--checkpoint", checkpoint),
                                      ("--model", model)) if value is not None]
    if not given:
        raise typer.BadParameter("give --run RUN_DIR or --checkpoint FILE"
                                 + (" (or --model NAME)" if takes_model else ""))
    if len(given) > 1:
        raise typer.BadParameter(f"give only one of {', '.join(given)}")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def predict(
    images: Annotated[list[str], typer.Argument(
        help="Image files, folders (searched recursively) or quoted globs.", show_default=False)],
    run: RunOpt = None,
    checkpoint: CheckpointOpt = None,
    model: PretrainedModelOpt = None,
    topk: Annotated[int, typer.Option("--topk", min=1, help="Classes to show per image.")] = 3,
    batch_size: ForwardBatchOpt = 32,
    device: DeviceOpt = "auto",
    amp: AmpOpt = False,
    workers: LoaderWorkersOpt = None,
    csv_file: Annotated[Path | None, typer.Option(
        "--csv", help="Also write the predictions to this CSV file (atomically).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Folder for the heat maps of --cam, and for a segmentation run's "
                      "palette mask PNGs and overlays.")
    ] = None,
    cam: CamOpt = None,
    cam_layer: CamLayerOpt = None,
    tensorboard: Annotated[Path | None, typer.Option(
        "--tensorboard", help="With --cam: also log the heat maps as images in this log dir.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Classify images with a trained model: top-k classes and probabilities per file.

    The class names and preprocessing come from the run, so no flag is repeated. With
    --model, a pretrained model names its own (ImageNet) classes, no run needed.
    Files that cannot be read are reported and skipped; the exit code is 1 only
    when not a single image could be predicted.

    Probabilities are calibrated when `tb evaluate --calibrate` stored a temperature
    for these weights (the output says so). --cam METHOD draws where the model
    looked for its top class over each image as OUT/<name>.cam.png (needs the
    PyTorch model, not an ONNX file).

    A segmentation run (`tb finetune --task segment`) writes OUT/<name>.png (class
    indices as a palette PNG at the image's size) and OUT/<name>.overlay.png.

    Examples:
      tb predict photos/ --run runs/my-run
      tb predict 'shots/*.jpg' cat.png --run runs/my-run --topk 5 --csv preds.csv
      tb predict cat.jpg --model tf_efficientnet_lite0
      tb predict photos/ --checkpoint runs/my-run/model.onnx
      tb predict photos/ --run runs/my-run --cam gradcam --out heatmaps/
      tb predict scans/ --run runs/my-segmenter --out masks/
    """
    from toolbox.cli.progress import make_progress
    from toolbox.inference import predict_images
    from toolbox.segment.inference import is_segmentation_model
    from toolbox.sources import skipped_json

    _model_source(run, checkpoint, model, takes_model=True)
    if model is None and is_segmentation_model(run=run, checkpoint=checkpoint):
        for flag, given in (("--cam", cam), ("--cam-layer", cam_layer),
                            ("--tensorboard", tensorboard)):
            if given is not None:
                raise typer.BadParameter("not available for segmentation runs", param_hint=flag)
        _predict_masks(images, run, checkpoint, out, batch_size, device, amp, csv_file,
                       json_out)
        return
    if out is not None and cam is None:
        raise typer.BadParameter("a classifier writes files to --out only with --cam; "
                                 "use --csv for the predictions", param_hint="--out")
    if tensorboard is not None and cam is None:
        raise typer.BadParameter("--tensorboard logs the heat maps of --cam",
                                 param_hint="--tensorboard")
    result = _warning_skipped(lambda: predict_images(
        images, run=run, checkpoint=checkpoint, model=model, topk=topk, batch_size=batch_size,
        device=device, amp=amp, workers=workers, csv_path=csv_file, cam=cam,
        cam_layer=cam_layer, out=out, tensorboard=tensorboard,
        progress=make_progress(not json_out)))
    if json_out:
        render.print_json({"model": result.model, "model_file": result.model_file,
                           "device": result.device, "calibrated": result.calibrated,
                           "temperature": result.temperature,
                           "calibration_file": result.calibration_file,
                           "cam_method": result.cam_method, "cam_layer": result.cam_layer,
                           "predictions": result.predictions,
                           "skipped": skipped_json(result.skipped)})
        return
    from toolbox.cli.pictures import calibration_note

    _show_predictions(result)
    calibration_note(result.calibrated, result.temperature, result.calibration_file,
                     result.calibration_ignored)
    if result.cam_method:
        render.note(f"heat maps ({result.cam_method} on layer {result.cam_layer}) in "
                    f"{result.out}")
    render.note(f"{len(result.predictions)} predicted, {len(result.skipped)} skipped on "
                f"{result.device} ({result.images_per_s:.1f} images/s)")
    if csv_file is not None:
        render.note(f"wrote {csv_file}")


def _predict_masks(images: list[str], run: Path | None, checkpoint: Path | None,
                   out: Path | None, batch_size: int, device: str, amp: bool,
                   csv_file: Path | None, json_out: bool) -> None:
    from toolbox.cli.progress import make_progress
    from toolbox.segment.inference import predict_masks
    from toolbox.sources import skipped_json

    if out is None:
        raise typer.BadParameter("a segmentation run writes mask PNGs: give --out DIR",
                                 param_hint="--out")
    for flag, given in (("--amp", amp), ("--csv", csv_file is not None)):
        if given:
            raise typer.BadParameter("not available for segmentation runs", param_hint=flag)
    result = _warning_skipped(lambda: predict_masks(
        images, out=out, run=run, checkpoint=checkpoint, batch_size=batch_size, device=device,
        progress=make_progress(not json_out)))
    if json_out:
        render.print_json({"model_file": result.model_file, "device": result.device,
                           "out": result.out, "predictions": result.predictions,
                           "skipped": skipped_json(result.skipped)})
        return
    rows = [(p.file, p.mask, f"{p.size[1]}x{p.size[0]}",
             ", ".join(f"{name} {share:.0%}" for name, share in
                       sorted(p.class_fractions.items(), key=lambda kv: -kv[1])))
            for p in result.predictions]
    render.show(render.table(f"Masks ({result.model_file})", ["file", "mask", "size", "classes"],
                             rows))
    render.note(f"{len(result.predictions)} segmented, {len(result.skipped)} skipped on "
                f"{result.device} ({result.images_per_s:.1f} images/s); masks and overlays in "
                f"{result.out}")


def _warning_skipped(predict_call: Callable[[], Any]) -> Any:
    """Run a prediction service and warn about the inputs it skipped, also when it fails
    because it skipped them all."""
    from toolbox.inference import NothingPredicted

    try:
        result = predict_call()
    except NothingPredicted as exc:
        _warn_skipped(exc.result.skipped)
        raise
    _warn_skipped(result.skipped)
    return result


def _warn_skipped(skipped: list[SkippedFile]) -> None:
    for skip in skipped:
        render.warn(f"skipped {skip.path}: {skip.reason}")


def _show_predictions(result: PredictResult) -> None:
    prob = "calibrated prob" if result.calibrated else "prob"
    columns = ["file", "class", prob] + (["next"] if result.topk > 1 else [])
    rows = []
    for pred in result.predictions:
        best, rest = pred.top[0], pred.top[1:]
        row = [pred.file, best.label, f"{best.prob:.1%}"]
        if result.topk > 1:
            row.append(", ".join(f"{g.label} {g.prob:.1%}" for g in rest))
        rows.append(row)
    title = f"Predictions ({result.model_file or result.model})"
    render.show(render.table(title, columns, rows, right=[prob]))


def evaluate(
    run: RunOpt = None,
    checkpoint: CheckpointOpt = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="An ImageFolder (DIR/<class>/<image>), or a DIR with train/ and val/ "
                       "or test/ sub-folders (the held-out one is used), or a CSV of "
                       "paths and labels.")] = None,
    labels: LabelsOpt = None,
    path_column: PathColumnOpt = None,
    label_column: LabelColumnOpt = None,
    split_column: SplitColumnOpt = None,
    dataset: DatasetOpt = None,
    root: RootOpt = None,
    split: Annotated[str | None, typer.Option(
        "--split", help="With --dataset: train or test (default test). With --data: the "
                        "sub-folder to use (default val/ or test/ when DIR has train/).")] = None,
    batch_size: ForwardBatchOpt = 64,
    device: DeviceOpt = "auto",
    amp: AmpOpt = False,
    workers: LoaderWorkersOpt = None,
    max_samples: Annotated[int | None, typer.Option(
        "--max", min=1, help="Evaluate only N samples, evenly spaced through the data "
                             "(a quick check that still sees every class).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Folder for the pictures (confusion matrix, top losses, reliability "
                      "diagram, heat maps) and the metrics JSON (default: RUN/eval).")] = None,
    tensorboard: LogdirOpt = None,
    no_tensorboard: Annotated[bool, typer.Option(
        "--no-tensorboard", help="Do not write to TensorBoard.")] = False,
    top_losses: Annotated[int, typer.Option(
        "--top-losses", metavar="K", min=0,
        help="Show the K images with the highest loss (top_losses.png; 0: none).")] = 16,
    calibrate: Annotated[bool, typer.Option(
        "--calibrate", help="Fit one temperature on this (validation) data and store it in "
                            "the run, so that `tb predict` reports calibrated probabilities."
    )] = False,
    cam: CamOpt = None,
    cam_layer: CamLayerOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Score a trained model on labelled data: accuracy, per-class F1, confusion matrix.

    Top-1/top-5 accuracy and per-class precision, recall and F1 as a table (or
    --json); the confusion matrix as a PNG and in TensorBoard in the run folder.
    Class folders are matched to the model's classes by name: a class the model
    does not know is an error naming it. Preprocessing is the run's own, so the
    accuracy equals what `tb finetune` recorded on the same validation data.

    Also: the highest-loss images as a captioned grid (top_losses.png), the class
    pairs most often confused, the expected calibration error with a reliability
    diagram (reliability.png), and with --cam a heat map per top-loss image.

    Examples:
      tb evaluate --run runs/my-run --data data/fmnist
      tb evaluate --run runs/my-run --dataset fashion-mnist --root data --json
      tb evaluate --checkpoint runs/my-run/model.onnx --data data/fmnist
      tb evaluate --run runs/my-run --data data/fmnist --calibrate --cam gradcam
      tb evaluate --run runs/my-run --data labels.csv --split-column split
    """
    from toolbox.cli.progress import make_progress
    from toolbox.inference import evaluate as evaluate_service
    from toolbox.inference.evaluate import result_dict
    from toolbox.segment.inference import is_segmentation_model

    _model_source(run, checkpoint)
    if (data is None) == (dataset is None):
        raise typer.BadParameter("give --data DIR, or --dataset NAME --root DIR")
    if is_segmentation_model(run=run, checkpoint=checkpoint):
        if data is None:
            raise typer.BadParameter("a segmentation run is evaluated on --data DIR "
                                     "(images/ and masks/)", param_hint="--dataset")
        for flag, given in (("--amp", amp), ("--max", max_samples is not None),
                            ("--tensorboard", tensorboard is not None),
                            ("--calibrate", calibrate), ("--cam", cam is not None),
                            ("--cam-layer", cam_layer is not None)):
            if given:
                raise typer.BadParameter("not available for segmentation runs", param_hint=flag)
        _evaluate_masks(run, checkpoint, data, split, batch_size, device, out, top_losses,
                        json_out)
        return
    named = None
    if dataset is not None:
        from toolbox.datasets import default_root, open_dataset
        from toolbox.inference.evaluate import NamedDataset

        used = split or "test"
        named = NamedDataset(dataset, used, open_dataset(dataset, root or default_root(), used))
    result = evaluate_service(
        run=run, checkpoint=checkpoint, data=data, dataset=named, split=split,
        batch_size=batch_size, device=device, amp=amp, workers=workers, out=out,
        tensorboard=tensorboard, write_tensorboard=not no_tensorboard, max_samples=max_samples,
        top_losses=top_losses, calibrate=calibrate, cam=cam, cam_layer=cam_layer,
        labels=labels, path_column=path_column, label_column=label_column,
        split_column=split_column, progress=make_progress(not json_out))
    _warn_skipped(result.skipped)
    if result.calibration_note:
        render.warn(result.calibration_note)
    if result.class_matches:
        pairs = ", ".join(f"'{d}' -> '{m}'" for d, m in result.class_matches.items())
        render.note(f"classes matched up to case and punctuation: {pairs}")
    if json_out:
        render.print_json(result_dict(result))
        return
    _show_evaluation(result)


def _evaluate_masks(run: Path | None, checkpoint: Path | None, data: Path, split: str | None,
                    batch_size: int, device: str, out: Path | None, top_losses: int,
                    json_out: bool) -> None:
    from toolbox.cli.progress import make_progress
    from toolbox.segment.inference import evaluate_masks, mask_eval_dict

    result = evaluate_masks(data=data, run=run, checkpoint=checkpoint, split=split,
                            batch_size=batch_size, device=device, out=out,
                            top_losses=top_losses, progress=make_progress(not json_out))
    _warn_skipped(result.skipped)
    if json_out:
        render.print_json(mask_eval_dict(result))
        return
    render.show(render.table(
        f"Per class ({result.data})", ["class", "IoU", "Dice", "pixels"],
        [(c.name, _percent(c.iou), _percent(c.dice), f"{c.pixels:,}") for c in result.classes],
        right=["IoU", "Dice", "pixels"]))
    from toolbox.cli.pictures import show_mask_top_losses

    show_mask_top_losses(result.top_losses)
    render.show(render.key_values("Evaluation", [
        ("model", result.model_file),
        ("data", f"{result.data}: {result.images} images"
                 + (f", {len(result.skipped)} skipped" if result.skipped else "")),
        ("mIoU", _percent(result.miou)),
        ("Dice (foreground classes)", _percent(result.mean_dice)),
        ("pixel accuracy", _percent(result.pixel_acc)),
        ("confusion matrix", result.confusion_png),
        ("top losses", result.top_losses_png or "-"),
        ("metrics", result.metrics_json),
        ("speed", f"{result.images / max(result.seconds, 1e-9):.1f} images/s on "
                  f"{result.device}"),
    ]))


def _show_evaluation(result: EvalResult) -> None:
    from toolbox.cli.pictures import evaluation_rows, show_top_losses

    rows = [(c.name, _percent(c.precision), _percent(c.recall), _percent(c.f1), c.support)
            for c in result.classes]
    avg = result.averages
    if avg:
        rows.append(("macro avg", _percent(avg["macro_precision"]),
                     _percent(avg["macro_recall"]), _percent(avg["macro_f1"]), result.samples))
    render.show(render.table(f"Per class ({result.data})",
                             ["class", "precision", "recall", "F1", "support"], rows,
                             right=["precision", "recall", "F1", "support"]))
    show_top_losses(result)
    top5 = ("top-5 accuracy" if result.top5_k == 5
            else f"top-{result.top5_k} accuracy ({result.top5_k} classes)")
    render.show(render.key_values("Evaluation", [
        ("model", result.model_file),
        ("data", f"{result.data}: {result.samples} images"
                 + (f", {len(result.skipped)} skipped" if result.skipped else "")),
        ("top-1 accuracy", _percent(result.top1)),
        (top5, _percent(result.top5)),
        ("confusion matrix", result.confusion_png),
        *evaluation_rows(result),
        ("metrics", result.metrics_json),
        ("tensorboard", result.tensorboard or "-"),
        ("speed", f"{result.images_per_s:.1f} images/s on {result.device}"),
    ]))
    if result.tensorboard is not None:
        from toolbox.tensorboard import tensorboard_command

        render.note(f"view it: {tensorboard_command(result.tensorboard)}")


def register(app: typer.Typer) -> None:
    """Mount `predict` and `evaluate` on the root app."""
    app.command("predict")(handle_errors(predict))
    app.command("evaluate")(handle_errors(evaluate))
