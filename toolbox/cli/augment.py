"""Command `augment`: imgaug pipelines over image folders (and `--list` of the augmenters)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from toolbox.cli import render
from toolbox.cli.errors import handle_errors
from toolbox.cli.options import JsonOpt, LogdirOpt, SeedOpt, WorkersOpt, parse_shard
from toolbox.errors import ToolboxError, UsageError


class ImageFormat(StrEnum):
    png = "png"
    jpg = "jpg"
    webp = "webp"


def _list(as_json: bool) -> None:
    from rich.markup import escape

    from toolbox.augment import list_augmenters

    infos = list_augmenters()
    if as_json:
        render.print_json(infos)
        return
    rows = []
    for info in infos:
        params = escape(", ".join(p.name if p.required else f"{p.name}={p.default}"
                                  for p in info.params))
        if info.example != f"{info.name}()":
            params += f"\n[dim]e.g. {escape(info.example)}[/dim]"
        rows.append((info.name, "yes" if info.geometric else "", params))
    tbl = render.table(
        f"{len(infos)} augmenters (imgaug.augmenters)", ["name", "masks", "parameters=defaults"],
        rows, caption="masks: moves pixels, so --masks are transformed too. Parameters without "
                      "a default are required. Use as --aug \"Name(param=value)\" or in a "
                      "--pipeline file.", wrap=["parameters=defaults"])
    render.show(tbl)


def _render_report(report, as_json: bool) -> None:
    if as_json:
        render.print_json(report)
        return
    rows = [
        ("images found", report.images_found),
        ("images read", report.images_read),
        ("augmented images written", report.images_written),
    ]
    if report.originals_copied:
        rows.append(("originals copied", report.originals_copied))
    if report.masks_written:
        rows.append(("masks written", report.masks_written))
    if report.already_done:
        rows.append(("already done (--skip-existing)", report.already_done))
    if report.shard:
        rows.append(("shard", report.shard))
    rows.append(("skipped", len(report.skipped)))
    rows += [(f"  {reason}", count) for reason, count in sorted(report.skip_reasons.items())]
    rows += [
        ("images/s", f"{report.images_per_second:.1f} ({report.workers} worker"
                     f"{'s' if report.workers != 1 else ''}, {report.seconds:.1f} s)"),
        ("seed", f"{report.seed} ({report.seed_source})"),
        ("pipeline", report.pipeline_file),
    ]
    if report.preview:
        rows.append(("preview", report.preview))
    if report.tensorboard:
        rows.append(("tensorboard", report.tensorboard))
    render.show(render.key_values(f"tb augment {report.src} -> {report.out}", rows))
    for item in report.skipped[:20]:
        render.warn(f"skipped {item.path}: {item.reason}")
    if len(report.skipped) > 20:
        render.warn(f"... and {len(report.skipped) - 20} more skipped (see --json)")


def augment(
    src: Annotated[str | None, typer.Argument(
        metavar="SRC", help="Images: a folder (recursive), one file, a quoted glob, or tar "
        "shards (a quoted pattern or a packed folder).",
        show_default=False)] = None,
    out: Annotated[Path | None, typer.Argument(
        metavar="OUT", help="Output folder (mirrors SRC's sub-folders); not SRC or inside it.",
        show_default=False)] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", help="A named pipeline: light, medium (default) or heavy.")] = None,
    aug: Annotated[str | None, typer.Option(
        "--aug", help="Inline pipeline: \"Fliplr(0.5); Affine(rotate=(-25, 25))\".")] = None,
    pipeline: Annotated[Path | None, typer.Option(
        "--pipeline", help="Pipeline file (.yaml/.yml/.json), e.g. OUT/pipeline.yaml.")] = None,
    copies: Annotated[int, typer.Option(
        "--copies", min=1, help="Augmented copies per image (NAME_aug0.EXT, ...).")] = 1,
    include_original: Annotated[bool, typer.Option(
        "--include-original", help="Also copy each original into OUT.")] = False,
    image_format: Annotated[ImageFormat | None, typer.Option(
        "--format", help="Output format (default: same as each input).")] = None,
    quality: Annotated[int, typer.Option(
        "--quality", min=1, max=100, help="Quality of JPEG/WebP outputs.")] = 95,
    seed: SeedOpt = None,
    workers: WorkersOpt = None,
    masks: Annotated[Path | None, typer.Option(
        "--masks", help="Folder of PNG segmentation masks (same relative paths); they get "
                        "the same geometric transforms. Outputs: OUT/images, OUT/masks.")
    ] = None,
    skip_existing: Annotated[bool, typer.Option(
        "--skip-existing", help="Keep outputs that exist (resume an interrupted run).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Write into an OUT that holds another run's outputs (refused "
                            "otherwise, so two runs never mix unnoticed).")] = False,
    preview: Annotated[Path | None, typer.Option(
        "--preview", help="Write a PNG grid of originals beside their augmented copies.")
    ] = None,
    tensorboard: LogdirOpt = None,
    shard: Annotated[str | None, typer.Option(
        "--shard", metavar="K/N", help="Do only shard K (from 0) of N: files split by a hash "
        "of their path; N runs with one --seed write what one run would.")] = None,
    out_format: Annotated[str, typer.Option(
        "--out-format", help="files (images under OUT) or wds (WebDataset tar shards and "
        "index.json, as `tb datasets pack` writes).")] = "files",
    shard_size: Annotated[str, typer.Option(
        "--shard-size", help="With --out-format wds from a folder: target size of a shard "
        "(KB, MB, GB).")] = "256MB",
    list_: Annotated[bool, typer.Option(
        "--list", help="List the augmenters with their parameters and defaults.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Augment a folder of images with an imgaug pipeline into OUT, reproducibly and in parallel.

    The pipeline is a preset (--preset), an inline spec (--aug) or a YAML/JSON file
    (--pipeline); the resolved pipeline and seed are written to OUT/pipeline.yaml.
    Unreadable files are skipped and counted; the exit code is 1 if nothing was written.

    Examples:
      tb augment imgs/ light/ --preset light --copies 3 --seed 0 --preview light.png
      tb augment imgs/ flip/ --aug "Fliplr(0.5); Affine(rotate=(-25, 25))"
      tb augment imgs/ again/ --pipeline light/pipeline.yaml
      tb augment imgs/ shards/ --seed 0 --shard 2/8 --skip-existing
      tb augment 'packed/train-*.tar' aug/ --seed 0 --out-format wds
      tb augment --list
    """
    if list_:
        _list(as_json)
        return
    if src is None or out is None:
        raise typer.BadParameter("SRC and OUT are required (or use --list)",
                                 param_hint="SRC OUT")
    given = [name for name, value in (("--preset", preset), ("--aug", aug),
                                      ("--pipeline", pipeline)) if value is not None]
    if len(given) > 1:
        raise typer.BadParameter(f"{' and '.join(given)} are exclusive: give one pipeline",
                                 param_hint=given[0])
    shard_spec = parse_shard(shard)
    if shard_spec is not None and seed is None and pipeline is None:
        raise typer.BadParameter("every shard needs the same seed: add --seed N",
                                 param_hint="--shard")
    from toolbox.augment import DEFAULT_PRESET, PRESETS, AugmentSpecError, augment_folder
    from toolbox.cli.progress import make_progress
    from toolbox.datasets import looks_like_shards

    if preset is not None and preset not in PRESETS:
        from toolbox.errors import unknown_name

        raise unknown_name("preset", preset, PRESETS, "presets: " + ", ".join(PRESETS),
                           param="--preset")
    if pipeline is not None and not pipeline.is_file():
        raise UsageError(f"pipeline file not found: {pipeline}", param="--pipeline")
    spec: str | Path = aug if aug is not None else pipeline if pipeline is not None \
        else preset or DEFAULT_PRESET

    common = dict(spec=spec, seed=seed, copies=copies, include_original=include_original,
                  image_format=image_format.value if image_format else None, quality=quality,
                  workers=workers, shard=shard_spec, progress=make_progress(enabled=not as_json))
    folder_only = dict(masks=masks, skip_existing=skip_existing, preview=preview,
                       tensorboard=tensorboard, overwrite=overwrite)
    try:
        if out_format != "files" or looks_like_shards(src):
            from toolbox.datasets import augment_shards, parse_size

            report = augment_shards(
                src, out, out_format=out_format, shard_size=parse_size(shard_size), **common,
                **{k: v for k, v in folder_only.items() if v not in (None, False)})
        else:
            report = augment_folder(src, out, **common, **folder_only)
    except AugmentSpecError as exc:  # the spec came from one option: the error names it
        exc.param = exc.param or (given[0] if given else "--preset")
        raise
    _render_report(report, as_json)
    if report.nothing_written:
        raise ToolboxError(f"nothing could be written: all {report.images_found} input(s) "
                           "were skipped", "see the reasons above")
    if report.skipped and not as_json:
        render.warn(f"{len(report.skipped)} file(s) skipped; the rest were written")


def register(app: typer.Typer) -> None:
    """Mount this module's commands on the root app."""
    app.command("augment")(handle_errors(augment))
