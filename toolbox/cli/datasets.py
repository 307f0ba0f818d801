"""Command group `datasets`: list the known data sets and fetch them dependably."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolbox.cli import render
from toolbox.cli.errors import handle_errors
from toolbox.cli.options import (
    JsonOpt,
    LabelColumnOpt,
    PathColumnOpt,
    RootOpt,
    SeedOpt,
    SplitColumnOpt,
    parse_shard,
)

app = typer.Typer(
    help="List and fetch data sets (verified downloads, resume, mirrors, offline import); "
         "pack images into tar shards.",
    no_args_is_help=True,
)

def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n else "-"


@app.command("list")
@handle_errors
def list_command(
    root: RootOpt = None,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Re-hash every file instead of trusting files unchanged since the "
        "fetch verified them.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """List the data sets tb knows and whether each is present and verified under --root.

    Examples:
      tb datasets list
      tb datasets list --root ./data --verify --json
    """
    from toolbox.datasets import default_root, list_status

    rows = list_status(root or default_root(), full=verify)
    if json_output:
        render.print_json(rows)
        return
    render.show(render.table(
        f"Data sets under {root or default_root()}",
        ["name", "task", "classes", "train", "test", "download", "present"],
        [(r.name, r.task, r.classes, f"{r.train_size:,}", f"{r.test_size:,}",
          _mb(r.download_bytes), "yes" if r.present else r.state) for r in rows],
        right=("classes", "train", "test", "download")))
    # Licence URLs are for copying: whole lines under the table, not a folded column in it.
    render.show("licences:\n" + "\n".join(f"  {r.name}: {r.license_url}" for r in rows))


@app.command("fetch")
@handle_errors
def fetch_command(
    name: Annotated[str, typer.Argument(help="Data set name (see `tb datasets list`).")],
    root: RootOpt = None,
    mirror: Annotated[list[str] | None, typer.Option(
        "--mirror", help="Base URL of a server with the same files, tried first (repeatable).",
        show_default=False)] = None,
    from_archive: Annotated[list[Path] | None, typer.Option(
        "--from-archive", help="Use local files instead of downloading: a published file "
        "(e.g. cifar-10-python.tar.gz) or a tar/zip holding them (repeatable).",
        show_default=False)] = None,
    from_dir: Annotated[Path | None, typer.Option(
        "--from-dir", help="Use the published files (or their unpacked contents) found "
        "anywhere under this folder instead of downloading.")] = None,
    export_folder: Annotated[Path | None, typer.Option(
        "--export-folder", help="Also write the data set as an ImageFolder tree of PNGs: "
        "DIR/train/<class>/..., DIR/test/<class>/...")] = None,
    export_max: Annotated[int | None, typer.Option(
        "--export-max", min=1, help="Export only the first N images of each split (with "
        "--export-segmentation: N training canvases, N/4 validation).")] = None,
    export_segmentation: Annotated[Path | None, typer.Option(
        "--export-segmentation", help="Also write a segmentation set for `tb finetune --task "
        "segment`: canvases holding 1 to 4 images at random places, masks = class + 1 "
        "(MNIST family; 2,000 train and 500 val canvases by default). For oxford-iiit-pet: "
        "where its folder goes (default ROOT/oxford-iiit-pet/segmentation).")] = None,
    binary: Annotated[bool, typer.Option(
        "--binary", help="With --export-segmentation: foreground/background masks.")] = False,
    canvas_size: Annotated[int, typer.Option(
        "--canvas-size", min=8, help="With --export-segmentation: canvas side in pixels.")] = 96,
    seed: SeedOpt = None,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0.01, help="Seconds without data before a download try fails.")] = 30.0,
    connect_timeout: Annotated[float, typer.Option(
        "--connect-timeout", min=0.01, help="Seconds allowed to open a connection.")] = 10.0,
    retries: Annotated[int, typer.Option(
        "--retries", min=0, help="Further tries per mirror after a dropped or stalled "
        "transfer (each resumes where the last stopped).")] = 3,
    json_output: JsonOpt = False,
) -> None:
    """Fetch a data set into --root, verify every file, and check torchvision loads it.

A segmentation set (oxford-iiit-pet) becomes a folder for `tb finetune --task segment`.

    Downloads use timeouts, retries with backoff and HTTP Range resume of FILE.part.

    --mirror URLs are tried first, then the official ones; every file's MD5 is checked before use.

    Files already present are verified and skipped.

    Offline, point --from-dir or --from-archive at copies made elsewhere (verified the same way).

    Examples:
      tb datasets fetch cifar10 --root ./data
      tb datasets fetch fashion-mnist --root ./data --from-dir ~/Downloads/fmnist
      tb datasets fetch mnist --root ./data --mirror https://example.org/mnist/
      tb datasets fetch mnist --root data --export-folder mnist-png --export-max 50
      tb datasets fetch fashion-mnist --root data --export-segmentation seg --binary
      tb datasets fetch oxford-iiit-pet --root data
    """
    from toolbox.cli.progress import make_progress
    from toolbox.datasets import DownloadSettings, default_root, fetch_dataset, get_dataset

    get_dataset(name)  # unknown names fail before anything is touched
    if (binary or canvas_size != 96) and export_segmentation is None:
        raise typer.BadParameter("needs --export-segmentation DIR",
                                 param_hint="--binary/--canvas-size")
    if from_dir is not None and not from_dir.is_dir():
        raise typer.BadParameter(f"no such folder: {from_dir}", param_hint="--from-dir")
    root = root or default_root()
    result = fetch_dataset(
        name=name, root=root, mirrors=mirror or [], from_archives=from_archive or [],
        from_dir=from_dir, export_folder=export_folder, export_max=export_max,
        export_segmentation=export_segmentation, binary=binary, canvas_size=canvas_size,
        seed=seed if seed is not None else 0,
        settings=DownloadSettings(connect_timeout=connect_timeout, read_timeout=timeout,
                                  retries=retries),
        progress=make_progress(not json_output))
    if json_output:
        render.print_json(result)
        return
    render.show(render.table(
        f"{result.name}: {result.state} under {result.root}",
        ["file", "action", "source", "size", "MB/s", "verified by"],
        [(f.filename, f.action, f.source, _mb(f.bytes),
          f"{f.mb_per_s:.1f}" if f.mb_per_s else "-", f.verified_by) for f in result.files],
        right=("size", "MB/s"), wrap=("source", "verified by")))
    seg = result.segmentation
    split_label = "image/mask pairs" if seg is not None else "loaded by torchvision"
    pairs = [(split_label, ", ".join(f"{k} {v:,}" for k, v in result.splits.items())),
             ("classes", result.classes), ("seconds", f"{result.seconds:.1f}")]
    if result.export is not None:
        counts = ", ".join(f"{k} {v:,}" for k, v in result.export.counts.items())
        pairs.append(("exported", f"{result.export.dest} ({counts} PNGs)"))
    if seg is not None:
        counts = ", ".join(f"{k} {v:,}" for k, v in seg.counts.items())
        what = f"{seg.size}x{seg.size} canvases" if hasattr(seg, "size") else "images"
        pairs.append(("segmentation", f"{seg.dest} ({counts} {what}, "
                                      f"{len(seg.classes)} classes)"))
    render.show(render.key_values(None, pairs))
    if seg is not None:
        render.note(f"use it: tb finetune --task segment --data {seg.dest}")
    else:
        render.note(f"use it: tb finetune --dataset {result.name} --root {result.root}")


@app.command("pack")
@handle_errors
def pack_command(
    src: Annotated[Path, typer.Argument(help="A folder of class sub-folders (with train/ and "
                                             "val/ when it has them) or a CSV of paths and "
                                             "labels.")],
    out: Annotated[Path, typer.Argument(help="Folder for the shards and index.json.")],
    shard_size: Annotated[str, typer.Option(
        "--shard-size", help="Target size of a shard: KB, MB or GB (decimal).")] = "256MB",
    shard: Annotated[str | None, typer.Option(
        "--shard", metavar="K/N", help="Pack only share K (from 0) of N, files split by a "
        "hash of their path as `tb augment --shard` splits them; run all N, anywhere.")
    ] = None,
    path_column: PathColumnOpt = None,
    label_column: LabelColumnOpt = None,
    split_column: SplitColumnOpt = None,
    seed: SeedOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Pack images into WebDataset tar shards for `tb finetune --data 'OUT/train-*.tar'`.

    Each sample is `__key__` (its path below SRC, without the extension), the image file's
    bytes as they are and `cls` (the class index); index.json names the classes and counts
    every shard's samples. The same input gives byte-identical shards.

    Examples:
      tb datasets pack photos/ shards/ --shard-size 256MB
      tb datasets pack labels.csv shards/ --split-column split
      tb datasets pack photos/ shards/ --shard 0/4
    """
    from toolbox.cli.progress import make_progress
    from toolbox.datasets import pack, parse_size

    result = pack(src, out, shard_size=parse_size(shard_size), shard=parse_shard(shard),
                  seed=seed if seed is not None else 0, path_column=path_column,
                  label_column=label_column, split_column=split_column,
                  progress=make_progress(not json_output))
    for item in result.skipped[:5]:
        render.warn(f"skipped {item.path}: {item.reason}")
    if len(result.skipped) > 5:
        render.warn(f"skipped {len(result.skipped) - 5} more file(s)")
    if json_output:
        render.print_json(result)
        return
    pairs = [(name, f"{split.samples:,} samples in {len(split.shards)} shard(s)")
             for name, split in result.splits.items()]
    pairs += [("classes", len(result.classes)), ("size", _mb(result.bytes_written)),
              ("index", str(result.index_file))]
    if result.shard:
        pairs.append(("shard", result.shard))
    render.show(render.key_values(f"packed {src} into {out}", pairs))
    first = next(iter(result.splits.values())).shards
    if first:
        render.note(f"train on it: tb finetune --data '{out}/train-*.tar'")


def register(root_app: typer.Typer) -> None:
    """Mount this module's commands on the root app."""
    root_app.add_typer(app, name="datasets")
