"""Every command's `--help`, read at 80 columns as a newcomer meets it: no type placeholders,
UPPER-CASE value names, prose that reflows, examples whole, and the README's usage lines."""

from __future__ import annotations

import itertools
import re

import pytest
from conftest import REPO
from typer.main import get_command

from toolbox.cli.app import app
from toolbox.cli.help import Command, Group, option_metavar, split_doc

WIDTH = 80
PLACEHOLDER = re.compile(r"<(bool|int|float|str|path|file|directory|list\[|[a-z]+ range)")


def _commands(command=None, prefix=()):
    command = command or get_command(app)
    yield prefix, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*prefix, name))


PATHS = {path: command for path, command in _commands()}


@pytest.fixture
def read_help(invoke, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(WIDTH))

    def _read(path):
        result = invoke(*path, "--help")
        assert result.exit_code == 0, result.output
        return result.stdout

    return _read


@pytest.mark.parametrize("path", list(PATHS), ids=lambda p: " ".join(("tb", *p)))
def test_help_reads_well_at_80_columns(path, read_help):
    command = PATHS[path]
    assert isinstance(command, Command | Group), "every command gets the house help"
    text = read_help(path)
    lines = text.splitlines()
    paragraphs, examples = split_doc(command.help)
    # Usage: arguments in capitals, as in the table and in error messages.
    usage = lines[0]
    assert usage.startswith("Usage: tb"), usage
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    for param in arguments:
        assert re.search(rf"(^|[\s\[]){re.escape(param.name.upper())}\b", usage), usage
    # No `<bool>`, `<int range> [x>=0]` ... anywhere.
    assert not PLACEHOLDER.search(text), PLACEHOLDER.search(text).group(0)
    assert "[x>=" not in text and "<=x" not in text
    # An option that takes a value shows an UPPER-CASE metavar (or its choices) after its name.
    ctx = command.make_context(" ".join(("tb", *path)), ["--help"], resilient_parsing=True)
    for param in command.get_params(ctx):
        if param.param_type_name == "option" and not (param.is_flag or param.hidden):
            metavar = option_metavar(param, ctx)
            assert metavar and (metavar.upper() == metavar or metavar.startswith("[")), metavar
            long_name = [o for o in param.opts if o.startswith("--")][-1]
            assert f"{long_name} {metavar}" in text, (param.opts, metavar)
    # Examples: every one on one line of its own, never wrapped, and short enough for 80 columns.
    if path in ((), ("summary",), ("augment",), ("finetune",), ("predict",), ("evaluate",)):
        assert examples, "a command's help ends with examples"
    for example in examples:
        assert f"  {example}" in lines, example
        assert len(example) + 2 <= WIDTH, f"example longer than {WIDTH} columns: {example}"
    # Everything else fits, and prose reflows: a line ends early only where a paragraph does.
    prose_end = next(i for i, line in enumerate(lines) if line.startswith("╭"))
    body = lines[:lines.index("Examples:")] if examples else lines
    assert all(len(line) <= WIDTH for line in body), max(body, key=len)
    flat = " ".join(" ".join(lines[1:prose_end]).split())
    for paragraph in paragraphs:
        assert " ".join(paragraph.split()) in flat, paragraph
    for line, following in itertools.pairwise(lines[1:prose_end]):
        if line and following and not re.match(r"\s*([-*]|\d+\.)\s", following):
            assert len(line) + 1 + len(following.split()[0]) > WIDTH, (line, following)


def test_root_help_shows_the_readme_usage_lines(read_help):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- tb --help examples", 1)[1].split("```bash\n", 1)[1]
    usage_lines = block.split("```", 1)[0].strip().splitlines()
    assert len(usage_lines) == 4
    lines = read_help(()).rstrip("\n").splitlines()
    assert [f"  {line}" for line in usage_lines] == lines[lines.index("Examples:") + 1:]


def test_split_doc_reflows_paragraphs_and_keeps_examples():
    doc = """First line
    continues here.

    Second paragraph
    over two lines.
    - a list item
      that wraps

    Examples:
      tb x --long-option value
      tb y
    """
    paragraphs, examples = split_doc(doc)
    assert paragraphs == ["First line continues here.",
                          "Second paragraph over two lines.\n- a list item that wraps"]
    assert examples == ["tb x --long-option value", "tb y"]


def test_missing_argument_error_names_it_in_capitals(invoke):
    result = invoke("models", "info")
    assert result.exit_code == 2
    assert "Missing argument 'NAME'" in result.stderr
    assert "Usage: tb models info [OPTIONS] NAME" in result.stderr
