"""`tb evaluate`'s service: accuracy, per-class scores and a confusion matrix on labelled data."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolbox import runs
from toolbox.csv_source import is_csv, read_csv_labels
from toolbox.errors import ToolboxError, UsageError
from toolbox.fileio import atomic_write_text
from toolbox.images import not_an_image, scan_image_folder, write_image
from toolbox.inference.metrics import ClassScore, ConfusionCounter, averages, class_scores
from toolbox.inference.predict import display_path
from toolbox.inference.top_losses import DEFAULT_TOP_LOSSES, ConfusedPair, TopLoss
from toolbox.jsonable import to_jsonable
from toolbox.progress import NullProgress, Progress
from toolbox.sources import DatasetReader, FileReader, PickedReader, SkippedFile, skipped_json

if TYPE_CHECKING:
    import numpy as np


@dataclass
class EvalResult:
    """What `evaluate` measured and where it wrote its pictures."""

    model_file: Path
    run_dir: Path | None
    data: str  # what was evaluated, as the user would name it
    tag: str  # short name used for output files and TensorBoard tags
    device: str
    samples: int
    top1: float
    top5: float
    top5_k: int  # k of the top-5 accuracy (fewer than 5 classes: all of them)
    classes: list[ClassScore]
    averages: dict[str, float]
    confusion_matrix: list[list[int]]
    confusion_png: Path
    metrics_json: Path
    tensorboard: Path | None
    skipped: list[SkippedFile] = field(default_factory=list)
    class_matches: dict[str, str] = field(default_factory=dict)  # data name -> model name
    seconds: float = 0.0
    # What the pictures show (see toolbox.inference.pictures): the highest-loss images, the
    # class pairs most often mixed up, and how far the probabilities can be trusted.
    top_losses: list[TopLoss] = field(default_factory=list)
    top_losses_png: Path | None = None
    most_confused: list[ConfusedPair] = field(default_factory=list)
    ece: float | None = None
    reliability: list = field(default_factory=list)  # ReliabilityBin per confidence bin
    reliability_png: Path | None = None
    temperature: float | None = None
    ece_calibrated: float | None = None
    calibrated_now: bool = False  # --calibrate fitted `temperature` in this evaluation
    calibration_file: Path | None = None
    calibration_note: str | None = None
    cam_method: str | None = None
    cam_layer: str | None = None

    @property
    def images_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class NamedDataset:
    """A fetched data set, opened by the caller: `toolbox.datasets` stands above inference (it
    builds on segment, which builds on inference), so evaluate is handed the data set instead
    of fetching it. `items` is torchvision-style: `classes`, `targets`, (image, label) items."""

    name: str
    split: str
    items: Any


@dataclass
class _Labelled:
    """Labelled data: how many items, how to read item i, its label (as a model class index)."""

    name: str
    tag: str
    count: int
    get_image: Callable[[int], np.ndarray]
    labels: list[int]
    describe: Callable[[int], str]
    renamed: dict[str, str] = field(default_factory=dict)  # data class -> model class
    not_images: list[SkippedFile] = field(default_factory=list)  # files found that are not images


def _name_key(name: str) -> str:
    """Class names compared loosely: 'T-shirt/top' (torchvision) and 'T-shirt_top' (its
    exported folder) are the same class."""
    return re.sub(r"[^0-9a-z]+", "", name.lower())


def match_classes(data_classes: list[str], model_classes: list[str], where: str
                  ) -> tuple[list[int], dict[str, str]]:
    """Map the data's class names onto the model's indices, refusing classes it never learnt.

    Names match exactly; a name that does not may still match one model class whose name is
    the same up to case and punctuation (and no other class shares that form). Returns the
    model index of each data class and the {data name: model name} pairs matched loosely.
    """
    index = {name: i for i, name in enumerate(model_classes)}
    loose: dict[str, list[int]] = {}
    for i, name in enumerate(model_classes):
        loose.setdefault(_name_key(name), []).append(i)
    mapping, renamed, unknown = [], {}, []
    for name in data_classes:
        if name in index:
            mapping.append(index[name])
        elif len(loose.get(_name_key(name), [])) == 1:
            mapping.append(loose[_name_key(name)][0])
            renamed[name] = model_classes[mapping[-1]]
        else:
            unknown.append(name)
    if unknown:
        shown = ", ".join(f"'{c}'" for c in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        known = ", ".join(model_classes[:12]) + (" ..." if len(model_classes) > 12 else "")
        noun = "class" if len(unknown) == 1 else "classes"
        raise ToolboxError(f"{where} has {noun} {shown} that the model does not know",
                           f"the model was trained on: {known}")
    if len(set(mapping)) != len(mapping):
        raise ToolboxError(f"{where} has several classes that match one model class",
                           "rename the class folders to the model's class names")
    return mapping, renamed


def resolve_data_folder(data: Path, split: str | None, model_classes: list[str]
                        ) -> tuple[Path, str | None]:
    """The ImageFolder to evaluate: DIR itself, or DIR/<split> for a train/val/test layout."""
    if not data.is_dir():
        raise ToolboxError(f"no such data folder: {data}", "pass a folder of class sub-folders")
    if split is not None:
        folder = data / split
        if not folder.is_dir():
            subs = sorted(p.name for p in data.iterdir() if p.is_dir())
            raise ToolboxError(f"{data} has no '{split}' sub-folder",
                               f"its sub-folders: {', '.join(subs) or 'none'}")
        return folder, split
    _, held_out = runs.split_folders(data)
    # Sub-folders named like the model's classes make DIR its class tree, whatever their names.
    subs = {p.name for p in data.iterdir() if p.is_dir()}
    if held_out is not None and not subs & set(model_classes):
        return held_out, held_out.name
    return data, None


def _labelled_folder(data: Path, split: str | None, model_classes: list[str]) -> _Labelled:
    folder, used = resolve_data_folder(data, split, model_classes)
    tree = scan_image_folder(folder)
    mapping, renamed = match_classes(tree.classes, model_classes, str(folder))
    paths = [p for p, _ in tree.samples]
    tag = f"{data.resolve().name}-{used}" if used else folder.resolve().name
    return _Labelled(str(folder), tag, len(paths), FileReader(paths),
                   [mapping[c] for _, c in tree.samples], lambda i: display_path(paths[i]),
                   renamed, [SkippedFile(display_path(p), not_an_image(p)) for p in tree.others])


def _labelled_table(csv_file: Path, images_dir: Path | None, columns: dict[str, str | None],
                    split: str | None, model_classes: list[str]) -> _Labelled:
    """The rows of a CSV table (`columns`: its path, label and split columns); with a split
    column, the rows of `split` (default val, what `tb finetune` validated on)."""
    import numpy as np  # a runtime import here only: the module types with it

    table = read_csv_labels(csv_file, images_dir=images_dir, **columns)
    source, picks, used = table.source, np.arange(len(table.source)), None
    if table.is_val is not None:
        used = split or "val"
        if used not in ("train", "val"):
            raise ToolboxError(f"--split {used}: a CSV's split column holds train and val",
                               "pass --split train or --split val")
        picks = np.flatnonzero(table.is_val == (used == "val"))
    elif split is not None:
        raise ToolboxError(f"--split {split} needs --split-column with a CSV",
                           "name the column that holds train/val")
    mapping, renamed = match_classes(source.classes, model_classes, str(csv_file))
    paths = [source.paths[i] for i in picks]
    tag = csv_file.stem + (f"-{used}" if used else "")
    return _Labelled(f"{csv_file}" + (f" ({used} rows)" if used else ""), tag, len(paths),
                     FileReader(paths), [mapping[source.targets[i]] for i in picks],
                     lambda i: display_path(paths[i]), renamed, table.skipped)


def _labelled_dataset(named: NamedDataset, model_classes: list[str]) -> _Labelled:
    name, split, dataset = named.name, named.split, named.items
    mapping, renamed = match_classes(list(dataset.classes), model_classes, f"{name} ({split})")
    labels = [int(v) for v in dataset.targets]
    return _Labelled(f"{name} ({split})", f"{name}-{split}", len(dataset),
                   DatasetReader(dataset), [mapping[c] for c in labels],
                   lambda i: f"{name}[{i}]", renamed)


def _subset(source: _Labelled, count: int) -> _Labelled:
    if count < 1:
        raise UsageError(f"--max must be at least 1, got {count}")
    picks = [round(i * (source.count - 1) / max(1, count - 1)) for i in range(count)]
    if count == 1:
        picks = [0]
    return _Labelled(f"{source.name}, {count} of {source.count}", source.tag, count,
                   PickedReader(source.get_image, picks), [source.labels[p] for p in picks],
                   lambda i: source.describe(picks[i]), source.renamed, source.not_images)


def safe_tag(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "data"


def _epochs_recorded(run_dir: Path | None) -> int:
    """Rows in the run's metrics.csv, so evaluation scalars line up with the training curves."""
    if run_dir is None or not (run_dir / runs.METRICS_FILE).is_file():
        return 0
    lines = (run_dir / runs.METRICS_FILE).read_text().splitlines()
    return max(0, len([line for line in lines if line.strip()]) - 1)


def evaluate(*, run: str | Path | None = None, checkpoint: str | Path | None = None,
             data: str | Path | None = None, dataset: NamedDataset | None = None,
             split: str | None = None, batch_size: int = 64,
             device: str = "auto", amp: bool = False, workers: int | None = None,
             out: str | Path | None = None, tensorboard: str | Path | None = None,
             write_tensorboard: bool = True, max_samples: int | None = None,
             top_losses: int = DEFAULT_TOP_LOSSES, calibrate: bool = False,
             cam: str | None = None, cam_layer: str | None = None,
             labels: str | Path | None = None, path_column: str | None = None,
             label_column: str | None = None, split_column: str | None = None,
             progress: Progress | None = None) -> EvalResult:
    """Evaluate a trained model on an ImageFolder (`data`) or a fetched data set (`dataset`,
    opened by the caller; `split` then is the data set's own).

    Writes `<tag>_confusion.png` and `<tag>_metrics.json` to `out` (default: RUN/eval, or an
    `eval` folder beside a bare model file), and the confusion matrix plus top-1/top-5 scalars
    to TensorBoard in `tensorboard` (default: the run folder) unless `write_tensorboard` is off.
    `max_samples` evaluates that many samples evenly spaced through the data (a quick look that
    still covers every class of a class-sorted folder). A CSV table (`data` ending in .csv, or
    `labels` with paths relative to the folder `data`) is read as `tb finetune` reads it.

    The pictures (`toolbox.inference.pictures`) go to the same folder: `top_losses.png` (the
    `top_losses` highest-loss images; 0: none), `reliability.png` with the ECE, and with `cam`
    (a method of `toolbox.inference.cam`, on `cam_layer` or the layer found) one heat-map
    overlay per top loss in its `cam/` sub-folder. `calibrate` fits one temperature on this
    data and stores it beside the model for `tb predict`.

    Raises:
        ToolboxError: no model or no data, a class the model does not know, nothing readable,
            CAM on an ONNX file or without a target layer.
    """
    from toolbox.inference._loading import load_for_inference, predict_batches
    from toolbox.inference.calibration import find_calibration
    from toolbox.inference.pictures import Outcomes, make_pictures

    progress = progress or NullProgress()
    if (data is None) == (dataset is None):
        raise ToolboxError("give exactly one of a data folder or a data set",
                           "use --data DIR, or --dataset NAME --root DIR")
    if top_losses < 0:
        raise UsageError(f"--top-losses must be 0 or more, got {top_losses}")
    if cam is None and cam_layer is not None:
        raise UsageError("--cam-layer goes with --cam METHOD", param="--cam-layer")
    if cam is not None and top_losses == 0:
        raise UsageError("--cam draws the top losses: give --top-losses K above 0",
                         param="--cam")
    loaded = load_for_inference(run=run, checkpoint=checkpoint, device=device)
    names = loaded.class_names
    maker = None
    if cam is not None:  # before the evaluation, so that a bad layer fails at once
        from toolbox.inference.cam import CamMaker

        maker = CamMaker(loaded, cam, cam_layer)
    if data is not None and (labels is not None or is_csv(data)):
        columns = dict(path_column=path_column, label_column=label_column,
                       split_column=split_column)
        source = _labelled_table(Path(labels or data), Path(data) if labels else None, columns,
                                 split, names)
    elif data is not None:
        source = _labelled_folder(Path(data), split, names)
    else:
        source = _labelled_dataset(dataset, names)
    if max_samples is not None and max_samples < source.count:
        source = _subset(source, max_samples)
    # Scores of other weights than the run's best (e.g. checkpoints/last.pt) get their own tag,
    # so their files and TensorBoard tags do not overwrite the best weights' ones.
    suffix = "" if loaded.model_file.name == runs.MODEL_FILE else f"-{loaded.model_file.stem}"
    tag = safe_tag(source.tag + suffix)
    counter = ConfusionCounter(len(names), k=5)
    stored = None if calibrate else find_calibration(loaded.model_file, loaded.run_dir)
    # Full log-probabilities only when a temperature is fitted or applied (N x C floats).
    outcomes = Outcomes(keep_log_probs=calibrate or bool(stored and stored.calibration))
    skipped: list[SkippedFile] = list(source.not_images)
    labels = source.labels
    start = time.perf_counter()
    progress.start(f"evaluating {source.name}", total=source.count, unit="images")
    try:
        import torch

        for batch in predict_batches(loaded, source.count, source.get_image,
                                     batch_size=batch_size, amp=amp, workers=workers):
            targets = torch.tensor([labels[i] for i in batch.indices], dtype=torch.int64)
            counter.update(batch.probs, targets)
            outcomes.add(batch.indices, batch.log_probs, targets)
            skipped += [SkippedFile(source.describe(i), reason) for i, reason in batch.failed]
            progress.advance(len(batch.indices) + len(batch.failed))
    finally:
        progress.finish()
    seconds = time.perf_counter() - start
    if counter.total == 0:
        raise ToolboxError(f"no image of {source.name} could be read "
                           f"({len(skipped)} skipped)", "check that the files are images")

    scores = class_scores(counter.matrix, names)
    base = loaded.run_dir if loaded.run_dir is not None else loaded.model_file.parent
    out_dir = Path(out) if out is not None else base / "eval"
    png = out_dir / f"{tag}_confusion.png"
    image = _confusion_picture(counter, names, f"{source.name}: top-1 {counter.top1:.2%}")
    write_image(png, image)
    try:
        pictures = make_pictures(outcomes, counter.matrix, loaded=loaded,
                                 get_image=source.get_image, describe=source.describe,
                                 data=source.name, out_dir=out_dir, top_k=top_losses,
                                 calibrate=calibrate, stored=stored, cam=maker)
    finally:
        if maker is not None:
            maker.close()
    logdir = Path(tensorboard) if tensorboard is not None else loaded.run_dir
    if write_tensorboard and logdir is not None:
        _log_to_tensorboard(logdir, tag, counter, {"confusion_matrix": image, **pictures.images},
                            pictures.ece, _epochs_recorded(loaded.run_dir))
    else:
        logdir = None
    result = EvalResult(
        model_file=loaded.model_file, run_dir=loaded.run_dir, data=source.name, tag=tag,
        device=loaded.device_name, samples=counter.total, top1=counter.top1, top5=counter.topk,
        top5_k=counter.k, classes=scores, averages=averages(scores),
        confusion_matrix=counter.matrix.tolist(), confusion_png=png,
        metrics_json=out_dir / f"{tag}_metrics.json", tensorboard=logdir, skipped=skipped,
        class_matches=source.renamed, seconds=seconds, top_losses=pictures.top_losses,
        top_losses_png=pictures.top_losses_png, most_confused=pictures.most_confused,
        ece=pictures.ece, reliability=pictures.reliability_bins,
        reliability_png=pictures.reliability_png, temperature=pictures.temperature,
        ece_calibrated=pictures.ece_calibrated, calibrated_now=calibrate,
        calibration_file=pictures.calibration_file, calibration_note=pictures.calibration_note,
        cam_method=pictures.cam_method, cam_layer=pictures.cam_layer)
    atomic_write_text(result.metrics_json, json.dumps(result_dict(result), indent=2) + "\n")
    return result


def _confusion_picture(counter: ConfusionCounter, names: list[str], title: str) -> np.ndarray:
    from toolbox.inference.plots import confusion_image

    return confusion_image(counter.matrix, names, title)


def _log_to_tensorboard(logdir: Path, tag: str, counter: ConfusionCounter,
                        images: dict[str, np.ndarray], ece: float, step: int) -> None:
    from toolbox.tensorboard import add_image, summary_writer

    with summary_writer(logdir) as writer:
        for name, image in images.items():
            add_image(writer, f"eval/{tag}/{name}", image, step=step)
        writer.add_scalar(f"eval/{tag}/top1", counter.top1, global_step=step)
        writer.add_scalar(f"eval/{tag}/top5", counter.topk, global_step=step)
        writer.add_scalar(f"eval/{tag}/ece", ece, global_step=step)


def result_dict(result: EvalResult) -> dict:
    """The JSON form of a result (what `--json` prints and `<tag>_metrics.json` holds)."""
    data = dataclasses.asdict(result)
    data["images_per_s"] = result.images_per_s
    data["class_names"] = [c.name for c in result.classes]
    data["skipped"] = skipped_json(result.skipped)
    return to_jsonable(data)
