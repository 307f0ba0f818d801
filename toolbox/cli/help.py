"""How every command's `--help` reads: one spelling for values, reflowed prose, whole examples.

Typer's own help shows a type placeholder on every option (`<bool>`, `<list[str]>`,
`<int range> [x>=0]`), spells arguments four ways (`{name}`, `[src]...`), keeps the hard line
breaks of a docstring and wraps examples mid-command. Here the rule is written once:

- a value is an UPPER-CASE metavar (an option's own `metavar=`, else one named for its type:
  INTEGER, FLOAT, TEXT, PATH; choices as `[a|b|c]`); flags show none; an argument is its name
  in capitals (`SRC`, `[OUT]`, `IMAGES...`) in the usage line, the table and error messages;
- limits and defaults follow the help in words (`[default: 1; at least 1]`);
- paragraphs reflow to the terminal; the `Examples:` block that ends a docstring is printed
  line by line and never wrapped, so it can be copied.

`adopt` gives these classes to every command registered on the root app, so a command or an
option added later reads the same without doing anything.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import sys
from enum import Enum
from io import StringIO
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.console import Group as RichGroup
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

_EXAMPLES = re.compile(r"^\s*Examples?:\s*$", re.M)
_BULLET = re.compile(r"^\s*([-*]|\d+\.)\s")
# Typer's type names (what `display_type` shows inside <...>) -> the metavar people know.
_TYPE_METAVARS = {"int": "INTEGER", "int range": "INTEGER", "float": "FLOAT",
                  "float range": "FLOAT", "str": "TEXT", "path": "PATH", "file": "FILE",
                  "directory": "DIR", "bool": "BOOLEAN"}


def split_doc(doc: str | None) -> tuple[list[str], list[str]]:
    """A docstring -> (paragraphs, each on one line; example lines, as written).

    Single line breaks inside a paragraph are source formatting, not meaning, so they become
    spaces; a line that starts a list item (`- `, `1. `) keeps its own line. Everything after a
    line `Examples:` is examples.
    """
    text = inspect.cleandoc(doc or "").partition("\f")[0]
    match = _EXAMPLES.search(text)
    prose, examples = (text[:match.start()], text[match.end():]) if match else (text, "")
    paragraphs = []
    for block in re.split(r"\n\s*\n", prose.strip()):
        lines: list[str] = []
        for line in block.splitlines():
            if lines and not _BULLET.match(line):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line.strip())
        if lines and lines[0]:
            paragraphs.append("\n".join(lines))
    return paragraphs, [line.strip() for line in examples.splitlines() if line.strip()]


def argument_metavar(param: Any) -> str:
    """`SRC`, `[OUT]`, `IMAGES...`: how an argument is spelled in the usage line."""
    name = param.metavar or param.name.upper()
    name = name if param.required else f"[{name}]"
    return name + ("..." if param.nargs != 1 else "")


def option_metavar(param: Any, ctx: Any) -> str:
    """The value placeholder shown after an option's names ('' for a flag)."""
    if param.is_flag or param.count:
        return ""
    if param.metavar:
        return param.metavar
    label = param.display_type(ctx).strip("<>")
    label = label.removeprefix("list[").removesuffix("]") if label.startswith("list[") else label
    if "|" in label:
        return f"[{label}]"
    return _TYPE_METAVARS.get(label, label.upper())


def _limits(param: Any) -> str | None:
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"at least {low}"
    if high is not None:
        return f"at most {high}"
    return None


def _default(param: Any) -> str | None:
    if isinstance(param.show_default, str):
        return param.show_default
    value = param.default
    if not param.show_default or value is None or value in ((), []) or callable(value):
        return None
    if getattr(param, "is_flag", False):
        if not param.secondary_opts:  # a plain flag is off unless given
            return None
        return (param.opts if value else param.secondary_opts)[0].lstrip("-")
    if isinstance(value, list | tuple):
        return ", ".join(str(v.value if isinstance(v, Enum) else v) for v in value)
    return str(value.value if isinstance(value, Enum) else value)


def _extras(param: Any) -> str:
    parts = [f"default: {d}" for d in [_default(param)] if d]
    parts += [limit for limit in [_limits(param)] if limit]
    if param.required and param.param_type_name == "option":
        parts.append("required")
    return f" [{'; '.join(parts)}]" if parts else ""


def _option_names(param: Any, ctx: Any) -> str:
    shorts = [o for o in param.opts if not o.startswith("--")]
    longs = [o for o in param.opts if o.startswith("--")]
    names = ", ".join(shorts + longs)
    if param.secondary_opts:
        names += " / " + ", ".join(param.secondary_opts)
    metavar = option_metavar(param, ctx)
    return f"{names} {metavar}" if metavar else names


def _panel(title: str, rows: list[tuple[str, Text]], colour: bool) -> Panel:
    table = Table.grid(padding=(0, 2), expand=True)
    table.add_column(no_wrap=True, style="bold cyan" if colour else "")
    table.add_column(ratio=1, overflow="fold")
    for name, text in rows:
        table.add_row(name, text)
    return Panel(table, title=title, title_align="left", box=box.ROUNDED,
                 border_style="dim" if colour else "")


def _param_rows(command: Any, ctx: Any, colour: bool) -> dict[str, list[tuple[str, Text]]]:
    panels: dict[str, list[tuple[str, Text]]] = {}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        is_arg = param.param_type_name == "argument"
        title = getattr(param, "rich_help_panel", None) or ("Arguments" if is_arg else "Options")
        name = (param.metavar or param.name.upper()) if is_arg else _option_names(param, ctx)
        text = Text(" ".join((param.help or "").split()))
        text.append(_extras(param), style="dim" if colour else "")
        panels.setdefault(title, []).append((name, text))
    # Arguments first, as in the usage line; named panels as they first appear; then the
    # general options, ending with --help.
    order = {"Arguments": 0, "Options": 2}
    return dict(sorted(panels.items(), key=lambda item: order.get(item[0], 1)))


def _command_rows(group: Any, ctx: Any) -> list[tuple[str, Text]]:
    rows = []
    for name in group.list_commands(ctx):
        sub = group.get_command(ctx, name)
        if sub is None or sub.hidden:
            continue
        paragraphs, _ = split_doc(sub.short_help or sub.help)
        rows.append((name, Text(paragraphs[0].replace("\n", " ") if paragraphs else "")))
    return rows


def render_help(command: Any, ctx: Any) -> str:
    """The whole `--help` page of `command` as text (with colour codes on a terminal)."""
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    width = shutil.get_terminal_size((80, 24)).columns
    out = StringIO()
    console = Console(file=out, width=width, force_terminal=colour, no_color=not colour,
                      highlight=False, emoji=False, markup=False)
    console.print(Text(command.get_usage(ctx), style="bold" if colour else ""))
    paragraphs, examples = split_doc(command.help)
    for n, paragraph in enumerate(paragraphs):
        console.print()
        console.print(Text(paragraph, style="" if n == 0 or not colour else "dim"))
    console.print()
    parts: list[Any] = [_panel(title, rows, colour)
                        for title, rows in _param_rows(command, ctx, colour).items()]
    if isinstance(command, TyperGroup):
        rows = _command_rows(command, ctx)
        if rows:
            parts.append(_panel("Commands", rows, colour))
    console.print(RichGroup(*parts))
    page = "\n".join(line.rstrip() for line in out.getvalue().splitlines())
    if examples:  # written as they are, never folded: a wrapped command breaks copy-paste
        page += "\n\nExamples:\n" + "\n".join("  " + line for line in examples)
    return page + "\n"


class Command(TyperCommand):
    """A Typer command with the house help and usage line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.param_type_name == "argument" and not param.metavar:
                # Error messages ("Missing argument 'SRC'") and the usage line use this name.
                param.metavar = param.name.upper()

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        arguments = [argument_metavar(p) for p in self.get_params(ctx)
                     if p.param_type_name == "argument"]
        return ([self.options_metavar] if self.options_metavar else []) + arguments

    def format_help(self, ctx: Any, formatter: Any) -> None:
        typer.echo(render_help(self, ctx), nl=False)  # printed, as Typer's rich help is


class Group(TyperGroup):
    """A Typer group with the house help."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        typer.echo(render_help(self, ctx), nl=False)  # printed, as Typer's rich help is


def adopt(app: typer.Typer) -> None:
    """Give every command and group registered on `app`, at any depth, the house classes.

    Called once by the root app after every module has registered its commands, so nothing a
    module registers can miss the rule.
    """
    if not isinstance(app.info.cls, type) or app.info.cls is TyperGroup:
        app.info.cls = Group
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = Command
    for group in app.registered_groups:
        if not isinstance(group.cls, type) or group.cls is TyperGroup:
            group.cls = Group
        adopt(group.typer_instance)
