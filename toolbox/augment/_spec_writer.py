"""Pipelines written back: resolved steps as YAML/JSON-ready data (the markers the reader in
`_spec.py` understands) and values in inline-spec syntax for `tb augment --list`."""

from __future__ import annotations

from typing import Any

from toolbox.augment._spec import CHILD_PARAMS, Pipeline, Step, _is_marker, _is_number


def step_to_data(step: Step, bare: bool = True) -> Any:
    """A resolved Step (keyword arguments only) as YAML/JSON-ready data, markers included.

    This is the inverse of the parser: a step without arguments is written as its bare name
    where the parser reads a name as a step (a pipeline item, a child list's item), else as
    `{Name: {}}` (`bare` false: inside other parameter values).
    """
    if step.args:
        raise ValueError(f"{step.name}: only resolved steps (keyword arguments) can be written")
    if not step.kwargs:
        return step.name if bare else {step.name: {}}
    return {step.name: {k: [step_to_data(c) for c in v] if _is_child_list(k, v)
                        else value_to_data(v) for k, v in step.kwargs}}


def _is_child_list(key: str, value: Any) -> bool:
    return key in CHILD_PARAMS and isinstance(value, list) and all(
        isinstance(v, Step) for v in value)


def value_to_data(value: Any) -> Any:
    """A parameter value as YAML/JSON-ready data."""
    if isinstance(value, Step):
        return step_to_data(value, bare=False)
    if isinstance(value, tuple):
        items = [value_to_data(v) for v in value]
        marker = "uniform" if len(value) == 2 and all(map(_is_number, value)) else "tuple"
        return {marker: items}
    if isinstance(value, list):
        if value and all(isinstance(v, Step) for v in value):
            return [step_to_data(v, bare=False) for v in value]
        return {"choice": [value_to_data(v) for v in value]}
    if isinstance(value, dict):
        return {k: value_to_data(v) for k, v in value.items()}
    return value


class _Flow(dict):
    """A mapping YAML writes on one line: `rotate: {uniform: [-25, 25]}`."""


def _flow_markers(data: Any) -> Any:
    if isinstance(data, dict):
        inner = {k: _flow_markers(v) for k, v in data.items()}
        return _Flow(inner) if _is_marker(data) else inner
    if isinstance(data, list):
        return [_flow_markers(v) for v in data]
    return data


def pipeline_to_yaml(pipeline: Pipeline, seed: int | None = None, header: str = "") -> str:
    """The YAML text of a pipeline (resolved steps), with `seed:` when one is given."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(_Flow, lambda dumper, value: dumper.represent_mapping(
        "tag:yaml.org,2002:map", dict(value), flow_style=True))
    data: dict[str, Any] = {}
    if seed is not None:
        data["seed"] = int(seed)
    data["pipeline"] = _flow_markers([step_to_data(s) for s in pipeline.steps])
    body = yaml.dump(data, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=100)
    return header + body


def format_value(value: Any) -> str:
    """A value in inline-spec syntax (used by `--list` for defaults)."""
    if isinstance(value, Step):
        inner = [format_value(a) for a in value.args]
        inner += [f"{k}={format_value(v)}" for k, v in value.kwargs]
        return f"{value.name}({', '.join(inner)})"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, tuple):
        items = [format_value(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{format_value(k)}: {format_value(v)}"
                               for k, v in value.items()) + "}"
    return repr(value)
