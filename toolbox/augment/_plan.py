"""Planning a `tb augment` run: where each input's outputs go, which shard a file belongs to,
where OUT may not be, and what an earlier run recorded in OUT."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toolbox.augment._spec import AugmentSpecError, Pipeline
from toolbox.augment._worker import _Task
from toolbox.errors import ToolboxError
from toolbox.images import is_glob, source_root
from toolbox.sharding import in_shard
from toolbox.sources import SkippedFile

PIPELINE_FILE = "pipeline.yaml"
FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp"}
MASKS_DIR = "masks"
IMAGES_DIR = "images"


@dataclass
class Plan:
    """The tasks of a run, the inputs left out for a name clash, and those already done."""

    tasks: list[_Task] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    already_done: int = 0


def _source_root(src: str | Path) -> tuple[Path, bool]:
    """The folder outputs are relative to, and whether SRC is a single file."""
    return source_root(src).resolve(), not is_glob(src) and Path(src).is_file()


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out_location(src: str | Path, out: str | Path, masks: str | Path | None = None
                       ) -> None:
    """Refuse an OUT that is SRC (or the masks folder), or inside it, where a later run or
    this one would read outputs back as inputs."""
    root, single_file = _source_root(src)
    out_path = Path(out).resolve()
    if out_path.exists() and not out_path.is_dir():
        raise ToolboxError(f"OUT {out} is a file", "pass a folder for the outputs")
    if out_path == root or (not single_file and _is_within(out_path, root)):
        raise ToolboxError(
            f"OUT {out} is {'the same as' if out_path == root else 'inside'} the source "
            f"folder {root}", "pick an OUT outside SRC so outputs are never read back as inputs")
    if masks is not None:
        mask_root = Path(masks).resolve()
        if _is_within(out_path, mask_root):
            raise ToolboxError(f"OUT {out} is inside the masks folder {mask_root}",
                               "pick an OUT outside the masks folder")


def _output_ext(relative: Path, image_format: str | None) -> str:
    if image_format is None:
        return relative.suffix
    return FORMATS[image_format]


def plan_tasks(files: list, out: Path, masks_root: Path | None, copies: int,
               include_original: bool, image_format: str | None, skip_existing: bool,
               shard: tuple[int, int] | None = None) -> Plan:
    """The tasks of this run (of its shard). Every shard checks every file's output names,
    so each skips the same name clashes an unsharded run would."""
    images_out = out / IMAGES_DIR if masks_root is not None else out
    masks_out = out / MASKS_DIR
    inputs = {f.path for f in files}
    seen: dict[Path, str] = {}
    plan = Plan()
    for f in files:
        rel = f.relative
        rel_posix = rel.as_posix()
        mask = str(masks_root / rel.with_suffix(".png")) if masks_root is not None else None
        ext = _output_ext(rel, image_format)
        planned: list[tuple[int, Path, Path | None]] = []
        for k in range(copies):
            name = f"{rel.stem}_aug{k}"
            dest = images_out / rel.parent / f"{name}{ext}"
            mask_dest = masks_out / rel.parent / f"{name}.png" if masks_root else None
            planned.append((k, dest, mask_dest))
        original = None
        if include_original:
            original = (images_out / rel, masks_out / rel.with_suffix(".png")
                        if masks_root else None)
        dests = [d for _, d, m in planned for d in (d, m) if d is not None]
        if original:
            dests += [d for d in original if d is not None]
        if mask is not None:
            inputs.add(Path(mask).resolve())
        clash = next((d for d in dests if d.resolve() in inputs), None)
        if clash is not None:
            raise ToolboxError(f"output {clash} would overwrite an input",
                               "pick an OUT folder outside SRC and the masks folder")
        other = next((seen[d] for d in dests if d in seen), None)
        mine = shard is None or in_shard(rel_posix, shard)
        if other is not None:
            if mine:
                plan.skipped.append(SkippedFile(rel_posix, f"same output name as {other}"))
            continue
        seen.update(dict.fromkeys(dests, rel_posix))
        if not mine:
            continue
        if skip_existing:
            planned = [(k, d, m) for k, d, m in planned
                       if not (d.exists() and (m is None or m.exists()))]
            if original and all(d is None or d.exists() for d in original):
                original = None
            if not planned and original is None:
                plan.already_done += 1
                continue
        plan.tasks.append(_Task(
            str(f.path), rel_posix, mask,
            tuple((k, str(d), str(m) if m else None) for k, d, m in planned),
            (str(original[0]), str(original[1]) if original[1] else None) if original else None,
        ))
    return plan


def check_out_is_this_run(out: Path, pipeline: Pipeline, seed: int,
                           recorded: Pipeline | None, resuming: bool) -> None:
    """Refuse an OUT that holds another run's outputs (another pipeline or seed, or files tb
    did not record): mixed silently, OUT/pipeline.yaml would describe only some of its images,
    and re-running it would not reproduce them. The same pipeline and seed is the same run
    (a resumed one, or another shard of it), so it may write there; so may a resumed run
    whose record is unreadable, as its seed had to be given again (see `recorded_pipeline`).

    Raises:
        ToolboxError: OUT is not empty and holds something else.
    """
    if not out.is_dir() or not any(not p.name.startswith(".") for p in out.iterdir()):
        return
    if recorded is not None and recorded.steps == pipeline.steps and recorded.seed == seed:
        return
    if recorded is None and resuming and (out / PIPELINE_FILE).is_file():
        return
    if recorded is None:
        what = "files that no tb augment run recorded"
    elif recorded.steps != pipeline.steps:
        what = f"the outputs of another pipeline (see {out / PIPELINE_FILE})"
    else:
        what = f"the outputs of seed {recorded.seed}, not {seed}"
    raise ToolboxError(f"{out} already holds {what}",
                       "write to a new folder, resume that run with --skip-existing (same "
                       "pipeline and seed), or pass --overwrite to write over it anyway")


def recorded_pipeline(out: Path, need_seed: bool) -> Pipeline | None:
    """The pipeline (and seed) in OUT/pipeline.yaml from an earlier, maybe interrupted, run.

    Raises:
        AugmentSpecError: the file is unreadable and its seed is needed; resuming with a new
            random seed would mix two runs' outputs, so the user must choose.
    """
    from toolbox.augment._registry import resolve_pipeline
    from toolbox.augment._spec import load_pipeline_file

    path = out / PIPELINE_FILE
    if not path.is_file():
        return None
    try:
        return resolve_pipeline(load_pipeline_file(path))
    except AugmentSpecError as exc:
        if not need_seed:
            return None
        raise AugmentSpecError(
            f"--skip-existing cannot resume: {path} is unreadable ({exc.message})",
            "pass the earlier run's --seed, or write to a fresh OUT") from None
