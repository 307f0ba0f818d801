"""`--config FILE.yaml`: a run's settings read from YAML (any run's `args.yaml` replays it)."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from toolbox import runs
from toolbox.errors import UsageError, unknown_name
from toolbox.train.config import FinetuneConfig

RESOLVED_KEY = "resolved"
# Settings that are paths: made absolute, so args.yaml and `--resume` work from any folder.
PATH_KEYS = ("data", "root", "weights", "feature_cache_dir")


def _fits(value: Any, hint: Any) -> bool:
    """Whether a YAML value can stand for a field annotated `hint` (ints count as floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings a YAML file holds, every key checked against `FinetuneConfig`.

    Raises:
        UsageError: missing or malformed file, an unknown key (with the closest valid key),
            or a value of the wrong type.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such config file: {path}",
                         "pass a YAML file, e.g. a run's args.yaml", param="--config")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    # ValueError: integers past Python's digit limit; RecursionError: absurdly deep nesting.
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"cannot read config file {path}: {first}",
                         "it must be a YAML mapping of setting: value", param="--config") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UsageError(f"config file {path} is not a mapping of setting: value",
                         "write one `setting: value` per line, as args.yaml does",
                         param="--config")
    # What a run resolved its settings to (args.yaml's `resolved:` section) is a record, not a
    # setting: a replay resolves them again.
    values.pop(RESOLVED_KEY, None)
    hints = typing.get_type_hints(FinetuneConfig)
    for key, value in values.items():
        if key not in hints:
            raise unknown_name(f"setting in {path}", str(key), hints,
                               "the keys are those of a run's args.yaml", param="--config")
        if not _fits(value, hints[key]):
            raise UsageError(f"{path}: {key} is {value!r}, which is not a "
                             f"{_type_name(hints[key])}", f"fix the value of {key}",
                             param="--config")
    return values


def _type_name(hint: Any) -> str:
    names = [getattr(arg, "__name__", str(arg)) for arg in typing.get_args(hint) or (hint,)]
    return " or ".join("null" if name == "NoneType" else name for name in names)


def resolve_config(file_values: dict[str, Any], cli_values: dict[str, Any], given: set[str]
                   ) -> tuple[FinetuneConfig, list[str]]:
    """The run's settings: the command-line flags `given` win over the file, the file over the
    defaults in `cli_values`. Returns the config and notes for the user.

    A file's `out` (every args.yaml has one) is used only while that folder holds no run yet, so
    replaying a finished run's args.yaml starts a new run folder instead of failing.
    """
    values = dict(cli_values)
    notes = []
    for key, value in file_values.items():
        if key in given:
            continue
        if key in PATH_KEYS and value is not None:
            value = _absolute(key, value)
        if key == "out" and value is not None and runs.holds_run(value):
            notes.append(f"{value} already holds a run; this one gets a new folder "
                         f"(pass --out to choose it)")
            value = None
        values[key] = value
    names = {f.name for f in dataclasses.fields(FinetuneConfig)}
    return FinetuneConfig(**{k: v for k, v in values.items() if k in names}), notes


def _absolute(key: str, value: str) -> str:
    """`value` as an absolute path; `~user` for a user this machine lacks is the file's mistake."""
    try:
        return str(Path(value).expanduser().resolve())
    except RuntimeError as exc:  # pathlib: "Could not determine home directory."
        raise UsageError(f"config file: {key} is {value!r}: {exc}", f"fix the value of {key}",
                         param="--config") from exc


def config_yaml(config: FinetuneConfig) -> str:
    """The YAML `args.yaml` and `--print-config` show."""
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False)
