"""The documentation site: it builds under `mkdocs build --strict`, every command and
sub-command has its page with prose and an output excerpt, every documented command is real, the
README stays short and its links resolve, and the shell examples marked runnable run
(sqlite-utils' `test_docs.py` idea, moved from the README to docs/)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from typer.main import get_command

from toolbox.cli.app import app

DOCS = REPO / "docs"
README = REPO / "README.md"
HEADING = re.compile(r"^(#{1,6}) (.*?)\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
RUNNABLE = re.compile(r"<!-- runnable -->\n```(?:bash|console)\n(.*?)```", re.S)
MKDOCS = Path(sys.executable).parent / "mkdocs"


def command_paths(command=None, prefix: tuple[str, ...] = ()):
    """(path, click command) for every visible command and group below the root, depth first."""
    command = command or get_command(app)
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if getattr(sub, "hidden", False):
            continue
        yield (*prefix, name), sub
        yield from command_paths(sub, (*prefix, name))


def sections(text: str) -> dict[str, list[str]]:
    """Heading line -> the lines below it up to the next heading of the same or a higher level.
    Fenced code is not scanned, so a `# comment` in a shell example ends no section."""
    lines = text.splitlines()
    headings: list[tuple[int, int, str]] = []
    in_fence = False
    for index, line in enumerate(lines):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else HEADING.match(line)
        if match:
            headings.append((index, len(match.group(1)), f"{match.group(1)} {match.group(2)}"))
    found: dict[str, list[str]] = {}
    for n, (index, level, heading) in enumerate(headings):
        end = next((i for i, lvl, _ in headings[n + 1:] if lvl <= level), len(lines))
        assert heading not in found, f"the heading '{heading}' comes twice"
        found[heading] = lines[index + 1:end]
    return found


def own_text(body: list[str]) -> str:
    """A section's own prose: up to its first sub-heading, without HTML comments."""
    own = []
    for line in body:
        if HEADING.match(line) and not FENCE.match(line):
            break
        own.append(line)
    return re.sub(r"<!--.*?-->", "", "\n".join(own), flags=re.S).strip()


def page_of(path: tuple[str, ...]) -> Path:
    return DOCS / "commands" / f"{path[0]}.md"


def heading_of(path: tuple[str, ...]) -> str:
    return ("# " if len(path) == 1 else "## ") + "tb " + " ".join(path)


PATHS = [path for path, _ in command_paths()]


def test_the_walk_finds_the_commands():
    assert ("predict",) in PATHS and ("datasets", "fetch") in PATHS


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_command_has_help_text(path):
    command = dict(command_paths())[path]
    assert (command.help or "").strip(), f"`tb {' '.join(path)}` has no help text"
    assert (command.short_help or command.help).strip()


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_command_has_a_docs_section(path):
    page = page_of(path)
    assert page.is_file(), f"`tb {' '.join(path)}` has no page {page.relative_to(REPO)}"
    found = sections(page.read_text(encoding="utf-8"))
    heading = heading_of(path)
    assert heading in found, f"{page.relative_to(REPO)} has no '{heading}' section"
    assert own_text(found[heading]), f"the section '{heading}' is empty"
    if len(path) == 1:
        assert any(FENCE.match(line) for line in found[heading]), (
            f"the page for '{heading}' shows no example or output excerpt (a fenced block)")


def test_docs_document_only_real_commands():
    real = {heading_of(path) for path in PATHS}
    documented = {heading for page in (DOCS / "commands").glob("*.md")
                  for heading in sections(page.read_text(encoding="utf-8"))
                  if re.match(r"#{1,2} tb ", heading)}
    assert not documented - real, f"docs sections for no command: {documented - real}"


def test_readme_is_short_and_its_links_resolve():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\(((?:docs/)[^)#]+)(?:#[^)]*)?\)", text)
    assert len(links) >= 12, links
    missing = [link for link in links if not (REPO / link).is_file()]
    assert not missing, f"README links to files that do not exist: {missing}"
    assert {f"docs/commands/{path[0]}.md" for path in PATHS} <= set(links)


def test_site_builds_strictly(tmp_path):
    """Strict: a broken link, a missing anchor, a page left out of the nav or an API reference
    that does not resolve fails the build."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([str(MKDOCS), "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    site = tmp_path / "site"
    for page in ("index.html", "commands/finetune/index.html", "api/index.html",
                 "benchmarks/index.html", "concepts/feature-cache/index.html"):
        assert (site / page).is_file(), page
    api = (site / "api/index.html").read_text(encoding="utf-8")
    assert "FinetuneConfig" in api and "run_benchmark" in api


def _runnable_blocks() -> list[tuple[str, str]]:
    return [(f"{page.relative_to(DOCS)}#{n}", block)
            for page in sorted(DOCS.rglob("*.md"))
            for n, block in enumerate(RUNNABLE.findall(page.read_text(encoding="utf-8")))]


def test_some_examples_are_marked_runnable():
    assert len(_runnable_blocks()) >= 2


@pytest.mark.slow
@pytest.mark.parametrize(("where", "block"), _runnable_blocks(), ids=[w for w, _ in
                                                                      _runnable_blocks()])
def test_runnable_example_runs(where, block, tmp_path):
    """Each line as a user types it (comments and `$ ` prompts dropped), the venv's `tb` first
    on PATH, in an empty folder; every line must exit 0."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for line in block.splitlines():
        command = line.removeprefix("$ ").split("  #", 1)[0].strip()
        if not command or command.startswith("#"):
            continue
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{where}: `{command}` exit {result.returncode}\n" \
                                       f"{result.stderr[-2000:]}"
