"""Property-based tests of `tb tune --space NAME=...`: the parser returns a well-formed
parameter that reads back from its own spelling, or refuses with one clean error line naming
`--space`; no value is ever evaluated as Python."""

from __future__ import annotations

import math

from fuzz_helpers import budget, outcome
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from toolbox.train import FinetuneConfig
from toolbox.tune import parse_param, parse_space
from toolbox.tune._space import GRID_LIMIT, SEARCHABLE

SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow])
NAMES = st.sampled_from([n.replace("_", "-") for n in SEARCHABLE]) | st.sampled_from(
    ["--lr", "LR", "weight_decay", "data", "out", "", " lr", "lr ", "l r", "x" * 300, "é"])
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.integers(-10**6, 10**6).map(str),
                    st.sampled_from(["0", "-0", "1e-4", ".5", "5.", "1_0", "٣", "0x10", "1e999",
                                     "nan", "inf", "", " ", "9" * 400, "__import__('os')"]))
WORDS = st.sampled_from(["adamw", "sgd", "adam", "cosine", "none", "ce", "focal", "true",
                         "false", "crop", "balanced", ""]) | st.text(max_size=8)
TAILS = st.sampled_from(["", ":log", ":0.1", ":1", ":0", ":-1", ":", ":log:log", ":LOG"])


@st.composite
def specs(draw: st.DrawFn) -> str:
    name = draw(NAMES)
    if draw(st.booleans()):
        values = f"{draw(NUMBERS)}..{draw(NUMBERS)}{draw(TAILS)}"
    else:
        values = ",".join(draw(st.lists(WORDS | NUMBERS, min_size=0, max_size=4)))
    return f"{name}{draw(st.sampled_from(['=', ' = ', '==', '']))}{values}"


@SETTINGS
@given(spec=specs() | st.text(max_size=40))
@example(spec="lr=1e-4..1e-1:log")
@example(spec="lr=__import__('os').system('x')")
@example(spec="epochs=1..9" + "9" * 5000)
@example(spec="epochs=1..999999999999")
@example(spec="lr=0..1e300:1e-300")
def test_a_space_parses_to_a_well_formed_parameter_or_is_refused(spec):
    param = outcome(parse_param, spec)
    if param is None:
        return
    assert param.name in SEARCHABLE
    if param.kind == "choice":
        assert param.choices and len(set(map(repr, param.choices))) == len(param.choices)
        assert all(not isinstance(c, str) or c == c.strip() for c in param.choices)
    else:
        assert math.isfinite(param.low) and math.isfinite(param.high)
        assert param.low < param.high
        assert not param.log or param.low > 0
        assert param.step is None or param.step > 0
        count = param.count()
        if count is not None and count > GRID_LIMIT:  # refused, never built
            assert outcome(param.grid) is None
        else:
            grid = param.grid()
            assert grid is None or (len(grid) == count and grid[0] == param.low and all(
                param.low <= v <= param.high + 1e-9 for v in grid))
    assert parse_param(param.spec()) == param


@settings(SETTINGS, max_examples=budget(0.25))
@given(spec=specs())
def test_a_parsed_space_is_one_the_trials_accept(spec):
    """What `parse_space` accepts, every end of a range and every choice is a setting a run
    validates (so no trial fails on a value the parser let through alone)."""
    params = outcome(parse_space, [spec], FinetuneConfig(freeze=True))
    if not params:
        return
    for param in params:
        for value in param.choices or (param.low, param.high):
            FinetuneConfig(freeze=True, **{param.name: value}).validate()
