"""Every command and subcommand has help text and its own README section, and every README
command section names a real command (sqlite-utils' `test_docs.py` idea).

Headings are matched exactly: a top-level command or group `tb X` needs the line `## tb X`; a
subcommand `tb X Y` needs `### tb X Y`. A section counts only when it has prose under its
heading, and a top-level section (with its subsections) must show a fenced output excerpt.
"""

from __future__ import annotations

import re

import pytest
from conftest import REPO
from typer.main import get_command

from toolbox.cli.app import app

README = REPO / "README.md"
HEADING = re.compile(r"^(#{1,6}) (.*?)\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def command_paths(command=None, prefix: tuple[str, ...] = ()):
    """(path, click command) for every visible command and group below the root, depth first."""
    command = command or get_command(app)
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if getattr(sub, "hidden", False):
            continue
        yield (*prefix, name), sub
        yield from command_paths(sub, (*prefix, name))


def expected_heading(path: tuple[str, ...]) -> str:
    return ("## " if len(path) == 1 else "### ") + "tb " + " ".join(path)


def readme_sections(text: str) -> dict[str, list[str]]:
    """Heading line -> the lines below it up to the next heading of the same or a higher level
    (so a `##` section includes its `###` subsections). Fenced code is not scanned for
    headings, so a `# comment` in a shell example does not end a section."""
    lines = text.splitlines()
    headings: list[tuple[int, int, str]] = []  # (line index, level, heading line)
    in_fence = False
    for index, line in enumerate(lines):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else HEADING.match(line)
        if match:
            headings.append((index, len(match.group(1)), f"{match.group(1)} {match.group(2)}"))
    sections: dict[str, list[str]] = {}
    for n, (index, level, heading) in enumerate(headings):
        end = next((i for i, lvl, _ in headings[n + 1:] if lvl <= level), len(lines))
        assert heading not in sections, f"README has the heading '{heading}' twice"
        sections[heading] = lines[index + 1:end]
    return sections


def own_text(body: list[str]) -> str:
    """The section's own prose: up to its first sub-heading, without HTML comments."""
    own = []
    for line in body:
        if HEADING.match(line) and not FENCE.match(line):
            break
        own.append(line)
    return re.sub(r"<!--.*?-->", "", "\n".join(own), flags=re.S).strip()


PATHS = [path for path, _ in command_paths()]
SECTIONS = readme_sections(README.read_text(encoding="utf-8"))


def test_the_walk_finds_the_commands():
    assert ("predict",) in PATHS and ("evaluate",) in PATHS
    assert len(PATHS) >= 2


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_command_has_help_text(path):
    command = dict(command_paths())[path]
    assert (command.help or "").strip(), f"`tb {' '.join(path)}` has no help text"
    assert (command.short_help or command.help).strip()


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_command_has_readme_section(path):
    heading = expected_heading(path)
    assert heading in SECTIONS, f"README.md has no '{heading}' section"
    body = SECTIONS[heading]
    assert own_text(body), f"README section '{heading}' is empty"
    if len(path) == 1:
        assert any(FENCE.match(line) for line in body), (
            f"README section '{heading}' shows no output excerpt (a fenced block)")


def test_readme_documents_only_real_commands():
    real = {expected_heading(path) for path in PATHS}
    documented = {h for h in SECTIONS if re.match(r"#{2,3} tb ", h)}
    assert not documented - real, f"README sections for no command: {documented - real}"
