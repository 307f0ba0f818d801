"""`--space`: which `tb finetune` settings a study searches and over what, parsed without eval.

    NAME=LOW..HIGH          a uniform range (whole numbers when the setting is one)
    NAME=LOW..HIGH:log      log-uniform (LOW above 0)
    NAME=LOW..HIGH:STEP     every STEP from LOW (what `--sampler grid` can walk)
    NAME=A,B,...            a choice (words or numbers)

NAME is a `tb finetune` option without its dashes (`lr`, `weight-decay`, `label-smoothing`,
`opt`); every value is checked as that option would check it before any trial runs.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from toolbox.errors import UsageError, suggest
from toolbox.train import FinetuneConfig

FORM = "NAME=LOW..HIGH, NAME=LOW..HIGH:log, NAME=LOW..HIGH:STEP or NAME=A,B,..."
# The settings a study may search: numbers and choices that change how a run trains. Data
# (paths, --val-split: another validation set is another yardstick), devices and outputs are not.
SEARCHABLE = (
    "lr", "weight_decay", "momentum", "label_smoothing", "mixup", "cutmix", "ema_decay",
    "backbone_lr_scale", "layer_decay", "gamma", "clip_grad", "min_delta",
    "epochs", "batch_size", "warmup_epochs", "grad_accum", "step_size", "patience", "img_size",
    "unfreeze_at",
    "opt", "sched", "loss", "resize", "sampler", "class_weights", "decoder", "amp_dtype",
    "ema", "amp", "pretrained", "freeze", "channels_last",
)
# When no --space is given, by what trains (the modes of `FinetuneConfig.mode`). A frozen
# backbone is a linear probe and wants larger steps (see DEFAULT_LR); label smoothing only
# where the loss takes it.
DEFAULT_SPACE = {
    "frozen": ("lr=1e-3..3e-1:log", "weight-decay=1e-6..1e-1:log", "label-smoothing=0..0.2"),
    "partly frozen": ("lr=1e-4..1e-1:log", "weight-decay=1e-6..1e-1:log",
                      "label-smoothing=0..0.2"),
    "full": ("lr=1e-5..1e-2:log", "weight-decay=1e-6..1e-1:log", "label-smoothing=0..0.2"),
}
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
_NAME = re.compile(r"(--)?[a-z][a-z0-9_-]*", re.ASCII)
_BOOLS = {"true": True, "false": False}
_MAX_DIGITS = 32  # no setting needs more; int() of thousands of digits is refused by Python
GRID_LIMIT = 10_000  # values of one parameter that --sampler grid may walk
_HINTS = typing.get_type_hints(FinetuneConfig)


@dataclass(frozen=True)
class SpaceParam:
    """One searched setting: a range (`low`..`high`, maybe `log` or by `step`) or `choices`."""

    name: str  # the FinetuneConfig field
    kind: str  # "float", "int" or "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    @property
    def flag(self) -> str:
        """How the option is spelled, and the name the study records it under."""
        return self.name.replace("_", "-")

    def spec(self) -> str:
        """The canonical `--space` text of this parameter."""
        if self.kind == "choice":
            return f"{self.flag}={','.join(_text(c) for c in self.choices)}"
        tail = ":log" if self.log else f":{_text(self.step)}" if self.step is not None else ""
        return f"{self.flag}={_text(self.low)}..{_text(self.high)}{tail}"

    def count(self) -> float | None:
        """How many values `grid()` holds (None: a continuous range)."""
        if self.kind == "choice":
            return len(self.choices)
        step = self.step if self.step is not None else (1 if self.kind == "int" else None)
        if step is None or self.log:
            return None
        ratio = (self.high - self.low) / step
        return math.floor(ratio + 1e-9) + 1 if math.isfinite(ratio) else math.inf

    def grid(self) -> list[Any] | None:
        """Every value, for `--sampler grid`; None for a continuous range.

        Raises:
            UsageError: more than GRID_LIMIT values (a grid no study walks to its end).
        """
        count = self.count()
        if count is None:
            return None
        if self.kind == "choice":
            return list(self.choices)
        if count > GRID_LIMIT:
            raise UsageError(f"--space {self.spec()} holds {count:.3g} values; --sampler grid "
                             f"walks at most {GRID_LIMIT}", "give a larger step",
                             param="--space")
        step = self.step if self.step is not None else 1
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(step)))
        # 12 significant digits: 0.1 * 3 is 0.3 on the grid, not 0.30000000000000004.
        return [self.low, *(float(f"{self.low + k * step:.12g}") for k in range(1, int(count)))]

    def suggest(self, trial: Any, grid: bool = False) -> Any:
        """This parameter's value in an Optuna `trial` (grid: one of `grid()`'s values)."""
        if grid or self.kind == "choice":
            return trial.suggest_categorical(self.flag, self.grid())
        if self.kind == "int":
            return trial.suggest_int(self.flag, int(self.low), int(self.high),
                                     step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.flag, float(self.low), float(self.high),
                                   step=self.step, log=self.log)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)  # repr reads back exactly


def _kind(name: str) -> str:
    """float, int, bool or str: the type of a setting's value (Optional stripped)."""
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0].__name__


def _refuse(spec: str, why: str) -> UsageError:
    return UsageError(f"--space {spec!r}: {why}", f"write {FORM}, e.g. lr=1e-4..1e-1:log",
                      param="--space")


def _number(spec: str, text: str, kind: str) -> float | int:
    text = text.strip()
    pattern = _INTEGER if kind == "int" else _NUMBER
    if len(text) > _MAX_DIGITS:
        raise _refuse(spec, f"{text[:12]}... is too long for a number")
    if not pattern.fullmatch(text):
        what = "a whole number" if kind == "int" else "a number"
        raise _refuse(spec, f"{text!r} is not {what}")
    value = int(text) if kind == "int" else float(text)
    if not math.isfinite(value):
        raise _refuse(spec, f"{text} is too large")
    return value


def _field(spec: str, raw: str) -> str:
    raw = raw.strip()
    name = raw.lower().lstrip("-").replace("-", "_") if _NAME.fullmatch(raw.lower()) else None
    if name in SEARCHABLE:
        return name
    flags = [n.replace("_", "-") for n in SEARCHABLE]
    close = suggest(raw.lstrip("-"), flags)
    known = f"did you mean: {', '.join(close)}? " if close else ""
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    why = ("it is not a setting a study can search" if name in fields
           else "no tb finetune option has that name")
    raise UsageError(f"--space {spec!r}: {raw!r} cannot be searched: {why}",
                     f"{known}write {FORM} with one of: {', '.join(flags)}",
                     param="--space")


def parse_param(spec: str) -> SpaceParam:
    """One `--space` value as a parameter (its values not yet checked against a config).

    Raises:
        UsageError: not of the form FORM, an option that cannot be searched, a value that is
            no number (or no whole number for a whole-number option), an empty range, LOW
            above HIGH, a log range that reaches 0 or a step that is not positive.
    """
    name_text, sep, values = spec.partition("=")
    if not sep:
        raise _refuse(spec, "it has no '='")
    name = _field(spec, name_text)
    kind = _kind(name)
    values = values.strip()
    if ".." in values:
        if kind not in ("float", "int"):
            raise _refuse(spec, f"{name.replace('_', '-')} takes a word, not a range: list the "
                                f"choices, e.g. {name.replace('_', '-')}=A,B")
        low_text, _, rest = values.partition("..")
        high_text, colon, tail = rest.partition(":")
        low, high = _number(spec, low_text, kind), _number(spec, high_text, kind)
        if not low < high:
            raise _refuse(spec, "the range is empty" if low == high
                          else f"LOW ({_text(low)}) is above HIGH ({_text(high)})")
        log, step = False, None
        if colon:
            if tail.strip() == "log":
                log = True
                if low <= 0:
                    raise _refuse(spec, "a log range must lie above 0")
            else:
                step = _number(spec, tail, kind)
                if step <= 0:
                    raise _refuse(spec, "the step must be above 0")
        return SpaceParam(name, kind, low, high, log, step)
    items = [item.strip() for item in values.split(",")]
    if not values or not all(items):
        raise _refuse(spec, "a choice is empty")
    choices = tuple(_choice(spec, item, kind) for item in items)
    if len(set(choices)) != len(choices):
        raise _refuse(spec, "a choice is given twice")
    return SpaceParam(name, "choice", choices=choices)


def _choice(spec: str, item: str, kind: str) -> Any:
    if kind == "bool":
        if item.lower() not in _BOOLS:
            raise _refuse(spec, f"{item!r} is not true or false")
        return _BOOLS[item.lower()]
    return item if kind == "str" else _number(spec, item, kind)


def parse_space(specs: Iterable[str], config: FinetuneConfig) -> list[SpaceParam]:
    """`--space` values (or the default space for `config`'s mode when there are none) as
    parameters, every value checked by the option's own rules against `config`.

    Raises:
        UsageError: see `parse_param`; an option given twice; a value the option does not
            accept with the other settings (`FinetuneConfig.validate`).
    """
    specs = list(specs)
    given = bool(specs)
    if not given:
        specs = list(default_space(config))
    params: list[SpaceParam] = []
    for spec in specs:
        param = parse_param(spec)
        if any(p.name == param.name for p in params):
            raise _refuse(spec, f"{param.flag} is given twice")
        params.append(param)
    for spec, param in zip(specs, params, strict=True):
        for value in _extremes(param):
            try:
                dataclasses.replace(config, **{param.name: value}).validate()
            except UsageError as exc:
                raise _refuse(spec, f"with {param.flag} {_text(value)}: {exc}") from None
    return params


def _extremes(param: SpaceParam) -> Sequence[Any]:
    return param.choices if param.kind == "choice" else (param.low, param.high)


def default_space(config: FinetuneConfig) -> tuple[str, ...]:
    """The space searched when `--space` is not given: lr, weight decay and, where the loss
    takes it, label smoothing."""
    specs = DEFAULT_SPACE[config.mode]
    try:
        dataclasses.replace(config, label_smoothing=0.1).validate()
    except UsageError as exc:  # the task or the loss takes none (any other fault shows later)
        if "--label-smoothing" in exc.message or exc.param == "--label-smoothing":
            specs = tuple(s for s in specs if not s.startswith("label-smoothing="))
    return specs
