"""Command group `models`: browse the timm and torchvision registries (`list`, `info`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from toolbox.cli import render
from toolbox.cli.errors import handle_errors
from toolbox.cli.options import JsonOpt

app = typer.Typer(help="Browse the timm and torchvision model registries.",
                  no_args_is_help=True)


class Source(StrEnum):
    """Which registry `tb models list` reads."""

    timm = "timm"
    torchvision = "torchvision"
    all = "all"


def _size(size: list[int] | None) -> str:
    return "x".join(map(str, size)) if size else "-"


@app.command("list")
@handle_errors
def list_command(
    pattern: Annotated[str, typer.Option(
        "--filter", "-f", metavar="PATTERN",
        help="A word matching anywhere in the name or family (resnet), or a timm-style "
             "wildcard (resnet5*, *vit*_224). A dot matches pretrained tags (resnet50.a1*).",
    )] = "",
    source: Annotated[Source, typer.Option(
        "--source", help="Which registry to list.", case_sensitive=False)] = Source.all,
    pretrained: Annotated[bool, typer.Option(
        "--pretrained", help="Only architectures with pretrained weights, listing their tags.",
    )] = False,
    params: Annotated[bool, typer.Option(
        "--params", help="Add parameter counts (computed on the meta device, then cached).",
    )] = False,
    limit: Annotated[int | None, typer.Option(
        "--limit", "-n", min=0, help="Show at most this many.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """List architectures from timm and torchvision (torchvision ones are named `tv:NAME`).

    Reads a cached index of both registries, so it answers without importing torch.

    Examples:
      tb models list --filter resnet --limit 10
      tb models list --filter 'convnext*' --pretrained --params
      tb models list --source torchvision --json
    """
    from toolbox.models import list_models

    progress = None
    if params:
        from toolbox.cli.progress import make_progress

        progress = make_progress()
    listing = list_models(pattern=pattern, source=source.value, pretrained=pretrained,
                          params=params, limit=limit, progress=progress)
    if listing.suggestions:  # a note, so --json stays `[]`
        render.note(f"no architecture matches '{pattern}'; did you mean: "
                    f"{', '.join(listing.suggestions)}?")
    if json_output:
        keys = ("name", "source", "input_size", "pretrained_tags", "family") + (
            ("params",) if params else ()) + (("weights_source",) if pretrained else ())
        render.print_json([{k: getattr(row, k) for k in keys} for row in listing.rows])
        return
    columns = ["name", "source", "input size", "pretrained tags" if pretrained else "tags"]
    if pretrained:
        columns.append("weights from")
    if params:
        columns.append("params")
    rows = []
    for row in listing.rows:
        # Tags without the repeated name (`a1_in1k`); --json gives the full `resnet50.a1_in1k`.
        tags = ("\n".join(t.rpartition(".")[2] for t in row.pretrained_tags) if pretrained
                else len(row.pretrained_tags))
        cells = [row.name, row.source, _size(row.input_size), tags]
        if pretrained:
            cells.append(row.weights_source or "-")
        if params:
            cells.append(f"{row.params:,}" if row.params is not None else "-")
        rows.append(cells)
    parts = ", ".join(f"{n} {s}" for s, n in listing.matched_by_source.items())
    caption = f"{listing.matched} of {listing.total} architectures matched"
    caption += f" ({parts})" if parts else ""
    if len(listing.rows) < listing.matched:
        caption += f"; showing {len(listing.rows)} (--limit)"
    render.show(render.table(None, columns, rows, right=("params", "tags")))
    render.show(caption)  # a footer line of its own: a caption would wrap to the table's width


@app.command("info")
@handle_errors
def info_command(
    name: Annotated[str, typer.Argument(
        help="A timm name (optionally with a pretrained tag) or a torchvision one (tv:NAME).")],
    json_output: JsonOpt = False,
) -> None:
    """Show an architecture's size, preprocessing, head, licence, paper and pretrained tags.

    Examples:
      tb models info resnet50.a1_in1k
      tb models info tv:resnet18 --json
    """
    from toolbox.models import model_info

    info = model_info(name)
    if json_output:
        render.print_json(info)
        return

    def floats(values: list[float] | None) -> str | None:
        return ", ".join(f"{v:g}" for v in values) if values else None

    pairs = [
        ("architecture", info.architecture),
        ("source", info.source),
        ("parameters", f"{info.params:,}" if info.params is not None else None),
        ("input size", _size(info.input_size)),
        ("mean", floats(info.mean)),
        ("std", floats(info.std)),
        ("interpolation", info.interpolation),
        ("crop_pct", info.crop_pct),
        ("classes", info.num_classes),
        ("classifier", info.classifier),
        ("license", info.license),
        ("hub id", info.hub_id),
        ("weights url", info.url),
        ("weights from", info.weights_source),
        ("paper", info.paper),
        ("default tag" if info.source == "timm" and "." not in info.name else "tag",
         info.pretrained_tag),
        (f"pretrained ({len(info.pretrained_tags)})", "\n".join(info.pretrained_tags) or "none"),
    ]
    render.show(render.key_values(info.name, pairs))


def register(root: typer.Typer) -> None:
    """Mount this module's commands on the root app."""
    root.add_typer(app, name="models")
