"""Command `tune`: a hyper-parameter search on Optuna whose trials are `tb finetune` runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from toolbox.cli import render
from toolbox.cli.errors import handle_errors
from toolbox.cli.finetune_settings import Settings, with_settings
from toolbox.cli.options import JsonOpt
from toolbox.cli.tune_view import TrialsView, number, trials_table
from toolbox.tune import DEFAULT_SPACE, KEEP, METRICS, PRUNERS, SAMPLERS, TuneSettings

if TYPE_CHECKING:
    from toolbox.tune import TuneResult, TuneStart

_SEARCH = "Search"
_D = TuneSettings()
_DATA_SAMPLERS = ("shuffle", "balanced")  # tb finetune's --sampler, which tune's takes too


def _default_spaces() -> str:
    """The default space in words: a setting whose range is the same in every mode once, the
    others with the range of each mode."""
    by_name: dict[str, dict[str, str]] = {}
    for mode, specs in DEFAULT_SPACE.items():
        for spec in specs:
            name, _, values = spec.partition("=")
            by_name.setdefault(name, {})[mode] = values
    parts = []
    for name, ranges in by_name.items():
        if len(set(ranges.values())) == 1:
            parts.append(f"{name}={next(iter(ranges.values()))}")
        else:
            parts.append(f"{name}=" + ", ".join(f"{v} ({mode})" for mode, v in ranges.items()))
    return "; ".join(parts)




def _show_start(start: TuneStart) -> None:
    trials = f"{start.trials} in this process" if start.trials else "until --timeout"
    rows = [
        ("study", f"{start.study} ({start.existing} trials so far)" if start.existing
         else f"{start.study} (new)"),
        ("storage", start.storage),
        ("metric", f"{start.metric} ({start.direction})"),
        *[("space", spec) for spec in start.space],
        ("sampler", start.sampler),
        ("pruner", start.pruner),
        ("trials", trials + (f", at most {start.timeout:g} s" if start.timeout else "")),
        ("each trial", start.base),
        ("seed", start.seed),
        ("study folder", start.out),
    ]
    render.stderr.print(render.key_values("tb tune", rows))


def _show_result(result: TuneResult, params: list[str]) -> None:
    render.show(trials_table(result.trials, result.metric, params,
                             title=f"study {result.study}: {len(result.trials)} trials"))
    best = result.best
    if best is None:
        render.stdout.print("no finished trial yet")
    else:
        rows = [("trial", best.number), (result.metric, number(best.value)),
                *[(name, number(value)) for name, value in best.params.items()],
                ("run folder", best.run_dir)]
        render.show(render.key_values("best trial", rows))
    if result.importances:
        render.show(render.table("parameter importances (Optuna)", ["parameter", "importance"],
                                 [(k, f"{v:.3f}") for k, v in result.importances.items()],
                                 right=["importance"]))
    for note in result.notes:
        render.note(note)
    if result.best_config is not None:
        render.stdout.print(f"best settings: {result.best_config} (replay: tb finetune "
                            f"--config {result.best_config})", soft_wrap=True)
    render.stdout.print(f"see every trial's hparams in TensorBoard: "
                        f"{result.tensorboard_command}", soft_wrap=True)


def _split_samplers(values: list[str] | None) -> tuple[str, str | None]:
    """`--sampler` values -> (the search's sampler, the data sampler or None)."""
    search = [v for v in values or [] if v not in _DATA_SAMPLERS]
    data = [v for v in values or [] if v in _DATA_SAMPLERS]
    if len(search) > 1 or len(data) > 1:
        raise typer.BadParameter("give at most one search sampler (tpe, random, grid) and one "
                                 "data sampler (shuffle, balanced)", param_hint="--sampler")
    return (search[0] if search else _D.sampler), (data[0] if data else None)


@with_settings
def tune_command(
    ctx: typer.Context,
    settings: Settings,
    trials: Annotated[int | None, typer.Option(
        "--trials", help=f"Trials this process runs (Optuna's n_trials; default: {_D.trials}, "
                         "or as many as --timeout allows); a study goes on from where it is.",
        show_default=False, rich_help_panel=_SEARCH)] = None,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", help="Start no trial after this many seconds.", metavar="SECONDS",
        rich_help_panel=_SEARCH)] = None,
    space: Annotated[list[str] | None, typer.Option(
        "--space", help="A setting to search, repeatable: NAME=LOW..HIGH, LOW..HIGH:log, "
                        "LOW..HIGH:STEP or A,B,... with NAME a tb finetune option without "
                        f"dashes. Default: {_default_spaces()} (label smoothing where the loss "
                        "takes it).", show_default=False, rich_help_panel=_SEARCH)] = None,
    metric: Annotated[str | None, typer.Option(
        "--metric", help=f"What to optimise: {', '.join(METRICS)} (default: val_acc, or "
                         "val_miou for --task segment); val_loss is minimised.",
        show_default=False, rich_help_panel=_SEARCH)] = None,
    study: Annotated[str | None, typer.Option(
        "--study", help="Study name (default: the model and a digest of the settings, so the "
                        "same command continues its study).", show_default=False,
        rich_help_panel=_SEARCH)] = None,
    storage: Annotated[str | None, typer.Option(
        "--storage", help="Where the trials live: an Optuna storage URL (sqlite:///FILE, "
                          "postgresql://USER@HOST/DB) or journal:FILE (a shared file "
                          "system); default: study.db in the study folder. Processes on one "
                          "--study and --storage share the study.", metavar="URL",
        show_default=False, rich_help_panel=_SEARCH)] = None,
    sampler: Annotated[list[str] | None, typer.Option(
        "--sampler", help=f"{', '.join(SAMPLERS)} (default: {_D.sampler}). shuffle or "
                          "balanced set the training data's sampler, as in tb finetune (give "
                          "--sampler twice for both).", show_default=False,
        rich_help_panel=_SEARCH)] = None,
    pruner: Annotated[str, typer.Option(
        "--pruner", help=f"{' or '.join(PRUNERS)}: median stops a trial after an epoch worse "
                         "than the earlier trials' median there (from epoch 2, once 3 have "
                         "finished).", rich_help_panel=_SEARCH)] = _D.pruner,
    keep: Annotated[str, typer.Option(
        "--keep", help=f"{' or '.join(KEEP)}: the run folders kept under OUT/trials.",
        rich_help_panel=_SEARCH)] = _D.keep,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Study folder: trials/, tensorboard/, best.yaml and study.db "
                      "(default: runs/tune-<study>).", show_default=False,
        rich_help_panel=_SEARCH)] = None,
    json_output: JsonOpt = False,
) -> None:
    """Search hyper-parameters with Optuna: each trial is a tb finetune run with the
    trial's values, the rest of its settings from the options, which are tb finetune's.

    The study lives in its storage: the same command run again continues it (after Ctrl-C
    too), and processes on many machines started with one --study and --storage share it.
    --seed is every trial's training seed and seeds the sampler. With --freeze the trials
    share the backbone's features, computed once. The best trial's settings are written to
    OUT/best.yaml, which tb finetune --config replays.

    Examples:
      tb tune --freeze --trials 30
      tb tune --freeze --space lr=1e-3..1e-1:log --space opt=adamw,sgd
      tb tune --data photos/ --model resnet50 --freeze --metric val_loss
      tb tune --sampler grid --space lr=0.01,0.03,0.1 --space label-smoothing=0,0.1
      tb tune --study s --storage journal:/shared/s.log --out /shared/s --trials 8
      tb finetune --config runs/tune-STUDY/best.yaml
    """
    from toolbox.errors import UsageError
    from toolbox.tune import SpaceParam, parse_param, tune

    search_sampler, data_sampler = _split_samplers(sampler)
    # This --sampler is tune's own option; it is the data sampler's setting only when it
    # names one (then it wins over --config, as a typed flag does).
    typed = settings.typed() | ({"sampler"} if data_sampler else set())
    extra = {"sampler": data_sampler} if data_sampler else {}
    config, notes = settings.resolve(extra, typed=typed)
    for line in notes:
        render.note(line)
    searched: list[SpaceParam] = [parse_param(spec) for spec in space or []]
    for param in searched:
        if param.name in typed:
            raise UsageError(f"--{param.flag} is both set and searched (--space "
                             f"{param.spec()})", f"drop --{param.flag} or that --space",
                             param="--space")
    if trials is None:
        trials = None if timeout is not None else _D.trials
    options = TuneSettings(trials=trials, timeout=timeout, space=tuple(space or ()),
                           metric=metric, study=study, storage=storage, sampler=search_sampler,
                           pruner=pruner, out=str(out) if out else None, keep=keep)
    view = TrialsView(enabled=not json_output)

    def on_start(start: TuneStart) -> None:
        if not json_output:
            _show_start(start)
        view.begin(start.metric, [spec.split("=", 1)[0] for spec in start.space])

    try:
        result = tune(config, options, progress=view, on_start=on_start, on_trial=view.trial)
    finally:
        view.close()
    if json_output:
        render.print_json(result)
    else:
        _show_result(result, view.params)
    if result.interrupted:
        kept = sum(row.state in ("complete", "pruned") for row in result.trials)
        render.stderr.print(f"interrupted: the study keeps its {kept} finished trials; run "
                            f"the same command to go on")
        raise typer.Exit(130)


def register(app: typer.Typer) -> None:
    """Mount this module's commands on the root app."""
    app.command("tune")(handle_errors(tune_command))
