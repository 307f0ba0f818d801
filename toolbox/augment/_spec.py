"""The pipeline spec language: inline `Name(arg, key=value); ...` text and YAML/JSON files
(read here; `_spec_writer.py` writes them back).

Both forms parse into the same tree of `Step`s (no imgaug import, no `eval`):

- Inline text is parsed with `ast`; only calls of bare names (or `iaa.Name`), literals
  (numbers, strings, True/False/None, tuples, lists, dicts) and + - * / between numbers are
  accepted.
- Files hold a mapping `{seed: S (optional), pipeline: [item, ...]}` or just the list. An item is
  `{Name: {param: value, ...}}`, `{Name: value}` (one positional argument), `Name` (no
  arguments) or an inline string such as `"Affine(rotate=(-25, 25))"`.
  YAML and JSON have lists but no tuples, and imgaug reads a tuple as a uniform range and a list
  as a discrete choice, so a value says which it means: `{uniform: [a, b]}` is the tuple
  `(a, b)`, `{choice: [a, b, c]}` is the list `[a, b, c]` (and `{tuple: [...]}` is any other
  tuple). A bare list is accepted only when it holds augmenters (children); any other bare list
  is an error, because guessing would silently change what the pipeline does.
"""

from __future__ import annotations

import ast
import json
import operator
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolbox.errors import UsageError
from toolbox.fileio import is_file

# Parameters whose values are augmenters (or lists of them) rather than plain values.
CHILD_PARAMS = frozenset({"children", "then_list", "else_list", "foreground", "background"})
FILE_SUFFIXES = (".yaml", ".yml", ".json")
_MARKERS = ("uniform", "choice", "tuple")
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv}
_SPEC_HINT = "see `tb augment --list` and the `tb augment` section of the README"
_SEPARATOR_HINT = ("write augmenter calls separated by ';' (or ','), e.g. "
                   "\"Fliplr(0.5); Affine(rotate=(-25, 25))\"")


class AugmentSpecError(UsageError):
    """A pipeline spec that cannot be parsed or built (a usage error); the message names the
    bad item."""


@dataclass(frozen=True)
class Step:
    """One augmenter call: its imgaug class name, positional and keyword arguments.

    Argument values are plain literals, `Step`s (nested augmenters) or lists of `Step`s.
    `where` says where the step came from, for error messages ("item 2 > GaussianBlur").
    """

    name: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    where: str = field(default="", compare=False)


@dataclass(frozen=True)
class Pipeline:
    """A parsed pipeline: its steps (run in order, as an `iaa.Sequential`) and a recorded seed."""

    steps: tuple[Step, ...]
    seed: int | None = None
    source: str = ""  # "preset medium", "inline", or the file path


def _shorten(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters for an error line (a spec can be thousands long)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _source(text: str, node: ast.AST) -> str:
    """The (shortened) text of `node`, to quote in an error."""
    return _shorten(ast.get_source_segment(text, node) or "")


def _err(where: str, message: str, hint: str | None = _SPEC_HINT) -> AugmentSpecError:
    return AugmentSpecError(f"{where}: {message}" if where else message, hint)


# ---------------------------------------------------------------------------- inline text
def _literal(node: ast.AST, where: str, text: str) -> Any:
    """A Python literal (or nested augmenter call) from an AST node, never evaluating code."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bytes | complex) or node.value is Ellipsis:
            raise _err(where, f"unsupported value {_source(text, node)!r}")
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand, where, text)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _err(where, f"cannot negate {_source(text, node)!r}")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _literal(node.left, where, text), _literal(node.right, where, text)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right)):
            raise _err(where, f"arithmetic only works on numbers: "
                              f"{_source(text, node)!r}")
        try:
            return _BINOPS[type(node.op)](left, right)
        except ZeroDivisionError:
            raise _err(where, "division by zero") from None
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e, where, text) for e in node.elts)
    if isinstance(node, ast.List):
        return [_literal(e, where, text) for e in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise _err(where, "`**` is not supported in a pipeline spec")
        # imgaug's dict parameters are keyed by names ({'height': 64}); YAML writes only
        # string keys, so any other key would not survive the pipeline.yaml round trip.
        bad = next((k for k in node.keys if not (isinstance(k, ast.Constant)
                                                 and isinstance(k.value, str))), None)
        if bad is not None:
            raise _err(where, f"dictionary keys must be quoted names, got {_source(text, bad)!r}")
        value = {k.value: _literal(v, where, text)
                 for k, v in zip(node.keys, node.values, strict=True)}
        if _is_augmenter_item(value):  # pipeline.yaml would read it back as that augmenter
            raise _err(where, f"a dictionary whose one key is {next(iter(value))!r} reads as "
                              f"an augmenter; imgaug's dictionaries take lower-case keys such "
                              f"as 'x' and 'y'")
        return value
    if isinstance(node, ast.Call):
        return _call(node, where, text)
    if isinstance(node, ast.Name):
        raise _err(where, f"'{node.id}' is not a value; write strings in quotes, "
                          "augmenters with parentheses, e.g. Fliplr(0.5)")
    raise _err(where, f"not a literal value: {_source(text, node)!r}")


def _dotted_name(node: ast.AST) -> str | None:
    """`Fliplr`, `iaa.Fliplr` -> "Fliplr"; `pillike.Equalize`, `iaa.pillike.Equalize` ->
    "pillike.Equalize"; anything else -> None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    parts.reverse()
    if parts[0] in ("iaa", "augmenters") and len(parts) > 1:
        parts = parts[1:]
    if len(parts) == 1 or (len(parts) == 2 and parts[0] == "pillike"):
        return ".".join(parts)
    return None


def _call_name(node: ast.Call, where: str, text: str) -> str:
    name = _dotted_name(node.func)
    if name is None:
        raise _err(where, f"expected an augmenter name, got "
                          f"{_source(text, node.func)!r}")
    return name


def _call(node: ast.Call, where: str, text: str) -> Step:
    name = _call_name(node, where, text)
    inner = f"{where} > {name}" if where else name
    args = []
    for arg in node.args:
        if isinstance(arg, ast.Starred):
            raise _err(inner, "`*args` is not supported in a pipeline spec")
        args.append(_literal(arg, inner, text))
    kwargs = []
    for kw in node.keywords:
        if kw.arg is None:
            raise _err(inner, "`**kwargs` is not supported in a pipeline spec")
        kwargs.append((kw.arg, _literal(kw.value, inner, text)))
    return Step(name, tuple(args), tuple(kwargs), where=inner)


def _step_nodes(tree: ast.Module) -> list[ast.AST]:
    """The expressions that are steps, in order: one per statement, except that a line of
    comma-separated augmenters (`A(1), B(2)`, a tuple to Python) or a list of them
    (`[A(1), B(2)]`, as Python code hands `iaa.Sequential` its children) gives each of them."""
    nodes: list[ast.AST] = []
    for stmt in tree.body:
        value = stmt.value if isinstance(stmt, ast.Expr) else stmt
        if (isinstance(value, ast.Tuple | ast.List) and value.elts
                and all(isinstance(e, ast.Call) or _dotted_name(e) for e in value.elts)):
            nodes.extend(value.elts)
        else:
            nodes.append(value)
    return nodes


def parse_inline(text: str, where: str = "") -> list[Step]:
    """Steps from inline text: augmenter calls separated by `;`, `,` or new lines."""
    text = text.strip()
    try:
        # Python's parser warns about escapes like '\,' in string literals; a user's spec is
        # no source file, so say nothing (3.12 turns it into a SyntaxWarning shown by default).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
            tree = ast.parse(text, mode="exec")
    except SyntaxError as exc:
        col = f" at column {exc.offset}" if exc.offset else ""
        raise _err(where, f"cannot parse pipeline spec {_shorten(text)!r}: {exc.msg}{col}",
                   _SEPARATOR_HINT) from None
    except (MemoryError, RecursionError):  # nesting deeper than Python's parser allows
        raise _too_deep(where) from None
    try:
        return _steps_from_tree(tree, where, text)
    except RecursionError:  # e.g. 2,000 chained `1+1+...`: deeper than this walk can go
        raise _too_deep(where) from None


def _too_deep(where: str) -> AugmentSpecError:
    return _err(where, "the pipeline spec is nested too deeply to parse",
                "write a flat list of steps separated by ';'")


def _steps_from_tree(tree: ast.Module, where: str, text: str) -> list[Step]:
    nodes = _step_nodes(tree)
    steps = []
    for index, node in enumerate(nodes, start=1):
        # An inline string inside a file is named by its place in the file.
        item = (f"item {index}" if not where
                else where if len(nodes) == 1 else f"{where}[{index}]")
        bare = _dotted_name(node)
        if bare is not None:  # a name without parentheses: no arguments
            steps.append(Step(bare, where=f"{item} > {bare}"))
            continue
        if not isinstance(node, ast.Call):
            raise _err(f"{item} `{_source(text, node)}`",
                       "expected an augmenter call such as Fliplr(0.5)", _SEPARATOR_HINT)
        steps.append(_call(node, item, text))
    if not steps:
        raise _err(where, "the pipeline spec is empty", "e.g. --aug \"Fliplr(0.5)\"")
    return steps


# ----------------------------------------------------------------------- YAML / JSON data
def _is_augmenter_key(key: Any) -> bool:
    return isinstance(key, str) and (key[:1].isupper() or key.startswith("pillike."))


def _is_augmenter_item(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) == 1 and _is_augmenter_key(next(iter(obj)))


def _step_from_data(obj: Any, where: str) -> list[Step]:
    """One pipeline item (mapping, bare name or inline string) -> its step(s)."""
    if isinstance(obj, str):
        return parse_inline(obj.strip(), where)
    if _is_augmenter_item(obj):
        name, value = next(iter(obj.items()))
        inner = f"{where} > {name}"
        if value is None:
            return [Step(name, where=inner)]
        if isinstance(value, dict) and not _is_augmenter_item(value) and not _is_marker(value):
            kwargs = tuple((str(k), _param_from_data(str(k), v, f"{inner}.{k}"))
                           for k, v in value.items())
            return [Step(name, (), kwargs, where=inner)]
        # Anything else is the first positional argument: `Fliplr: 0.5`, `OneOf: [...]`.
        first = (_children_from_data(value, inner) if isinstance(value, list)
                 and all(_looks_like_augmenter(v) for v in value)
                 else _value_from_data(value, inner))
        return [Step(name, (first,), where=inner)]
    raise _err(where, f"expected an augmenter such as `{{Fliplr: 0.5}}` or "
                      f"\"Fliplr(0.5)\", got {obj!r}")


def _looks_like_augmenter(obj: Any) -> bool:
    return _is_augmenter_item(obj) or (isinstance(obj, str) and _is_augmenter_key(obj))


def _children_from_data(value: Any, where: str) -> list[Step]:
    if not isinstance(value, list):
        value = [value]
    steps: list[Step] = []
    for index, item in enumerate(value, start=1):
        steps.extend(_step_from_data(item, f"{where}[{index}]"))
    return steps


def _is_marker(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) == 1 and next(iter(obj)) in _MARKERS


def _param_from_data(key: str, value: Any, where: str) -> Any:
    if key in CHILD_PARAMS and value is not None:
        if isinstance(value, list):
            return _children_from_data(value, where)
        if _looks_like_augmenter(value):
            steps = _step_from_data(value, where)
            return steps[0] if len(steps) == 1 else steps
    return _value_from_data(value, where)


def _value_from_data(obj: Any, where: str) -> Any:
    """A parameter value from YAML/JSON data, turning the markers into tuples and lists."""
    if _is_marker(obj):
        marker, items = next(iter(obj.items()))
        if not isinstance(items, list):
            raise _err(where, f"`{marker}:` needs a list, e.g. {{{marker}: [0, 1]}}")
        values = [_value_from_data(v, where) for v in items]
        if marker == "uniform":
            if len(values) != 2 or not all(_is_number(v) for v in values):
                raise _err(where, f"`uniform:` needs two numbers [low, high], got {items!r}")
            return tuple(values)
        return tuple(values) if marker == "tuple" else values
    if _is_augmenter_item(obj):
        steps = _step_from_data(obj, where)
        return steps[0] if len(steps) == 1 else steps
    if isinstance(obj, dict):
        return {str(k): _value_from_data(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list):
        if obj and all(_is_augmenter_item(v) for v in obj):
            return _children_from_data(obj, where)
        raise _err(where, f"a bare list {obj!r} is ambiguous here",
                   "write {uniform: [low, high]} for a range (a tuple in imgaug) or "
                   "{choice: [a, b, ...]} for one of several values (a list in imgaug)")
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise _err(where, f"unsupported value {obj!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def pipeline_from_data(data: Any, source: str = "") -> Pipeline:
    """A Pipeline from loaded YAML/JSON data (a mapping with `pipeline:` or a bare list)."""
    seed = None
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"pipeline", "seed"}, key=str)  # YAML keys may be null
        if unknown:
            raise _err(source, f"unknown top-level key(s) {', '.join(map(str, unknown))}",
                       "a pipeline file holds `pipeline:` (a list of augmenters) and "
                       "optionally `seed:`")
        if "pipeline" not in data:
            raise _err(source, "missing the `pipeline:` list of augmenters")
        seed = data.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)
                                 or seed < 0):
            raise _err(source, f"`seed:` must be a non-negative integer, got {seed!r}")
        data = data["pipeline"]
    if not isinstance(data, list) or not data:
        raise _err(source, "the pipeline must be a non-empty list of augmenters")
    steps: list[Step] = []
    for index, item in enumerate(data, start=1):
        steps.extend(_step_from_data(item, f"item {index}"))
    return Pipeline(tuple(steps), seed, source)


def load_pipeline_file(path: str | Path) -> Pipeline:
    """Read a .yaml/.yml/.json pipeline file."""
    import yaml

    path = Path(path)
    if not is_file(path):
        raise AugmentSpecError(f"pipeline file not found: {path}",
                               "pass a .yaml/.yml/.json file, a preset or an inline spec")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AugmentSpecError(f"cannot read pipeline file {path}: {exc}",
                               "pass a UTF-8 .yaml/.yml/.json file") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    # ValueError: JSON's own errors, and numbers over Python's 4,300-digit int limit.
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AugmentSpecError(f"{path}: not valid {path.suffix.lstrip('.').upper()}: {first}",
                               None) from None
    except RecursionError:
        raise AugmentSpecError(f"{path}: nested too deeply to read") from None
    try:
        pipeline = pipeline_from_data(data, str(path))
    except RecursionError:  # a YAML alias that contains itself (`&a [*a]`) never ends
        raise AugmentSpecError(f"{path}: an item contains itself (a YAML alias loop) or is "
                               "nested too deeply", "write each augmenter out in full") from None
    return Pipeline(pipeline.steps, pipeline.seed, str(path))
