"""A recipe search from start to end: the study opened (or joined), the trials a dead process left queued again,
trials run until the study holds --trials finished ones, each finished trial's checkpoints thinned and the reports
rewritten after it (a killed sweep leaves them current), a summary at the end. An interrupted sweep keeps what
finished and says how to go on."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from tunecv.search import report
from tunecv.search import study as studies
from tunecv.search.plot import plot_sweep
from tunecv.search.space import Param, describe
from tunecv.search.trial import Objective, Refused, Surplus, TrainTrial, pruned_from
from tunecv.train.resume import RunStopped


@dataclass(frozen=True)
class Search:
    """What the command asked for: the space, how many finished trials, where, by which metric."""

    space: dict[str, Param]
    trials: int
    out_dir: Path
    metric: str
    seed: int
    study_name: str
    storage: str | None  # None: sqlite in out_dir
    command: str  # this command line: running it again goes on
    keep_checkpoints: str = "best"  # a finished trial's checkpoints kept (KEEP_CHECKPOINTS, drop_checkpoints)


class Stopped(Exception):
    """Ctrl-C or a signal stopped the sweep; `code` is the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def run_search(search: Search, train: TrainTrial, trial_config: Callable[[dict[str, Any]], dict[str, Any]],
               say: Callable[[str], None]) -> str:
    """Run the search's trials (`train` trains one); `trial_config`: the flat config of a trial's values (its epoch
    count; best.yaml when the best trial's folder is on another machine); `say` gets a line per trial; returns the
    closing summary."""
    search.out_dir.mkdir(parents=True, exist_ok=True)
    url = search.storage or studies.default_storage(search.out_dir)
    study = studies.open_study(url, search.study_name, {"search": {k: p.spec() for k, p in search.space.items()},
                                                        "metric": search.metric}, search.seed, search.trials)
    for number in studies.retry_dead_trials(study, socket.gethostname()):
        say(f"tunecv: trial {number} was left running by a process that is gone; its values run again")
    write = partial(write_reports, study, search, trial_config)
    trials = study.get_trials(deepcopy=False)
    if studies.finished(trials) >= search.trials:
        write()
        return f"tunecv: the search in {search.out_dir} is finished ({studies.finished(trials)} trials, --trials " \
               f"{search.trials}); {best_words(trials, search)}; raise --trials to search further"
    objective = Objective(search.space, search.trials, search.out_dir, search.metric, train,
                          lambda params: pruned_from(trial_config(params)))

    def after_trial(study: Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        if trial.state in studies.FINISHED and "folder" in trial.user_attrs:
            drop_checkpoints(Path(trial.user_attrs["folder"]), search.keep_checkpoints)
        if not trial.user_attrs.get("surplus"):
            best = studies.best_trial(trials, search.metric)
            say(report.trial_line(trial, search.space, search.metric, best,
                                  (studies.finished(trials), search.trials)))
            write()
        if studies.busy(trials) >= search.trials:
            study.stop()

    try:
        if studies.busy(trials) < search.trials:
            # gc after each trial: a pruned trial's exception, which Optuna keeps in a reference cycle, holds the
            # frames of its run, and so its model and data, until the collector runs
            study.optimize(objective, callbacks=[after_trial], catch=(Surplus, Refused), gc_after_trial=True)
    except (KeyboardInterrupt, RunStopped) as stop:
        raise Stopped(interrupted(study, objective.current, search, trial_config), _exit_code(stop)) from None
    write()
    return summary(study.get_trials(deepcopy=False), search)


def _exit_code(stop: BaseException) -> int:
    return 128 + stop.signum if isinstance(stop, RunStopped) else 130


def interrupted(study: Study, number: int | None, search: Search,
                trial_config: Callable[[dict[str, Any]], dict[str, Any]]) -> str:
    """The interrupted trial (FAIL, counting for nothing) queued again, the reports written; what to say."""
    trials = study.get_trials(deepcopy=False)
    current = next((t for t in trials if t.number == number), None)
    again = ""
    if current is not None and current.state == TrialState.FAIL and not current.user_attrs.get("surplus"):
        studies.retry(study, current)
        again = f"; trial {number} did not finish and runs again"
    write_reports(study, search, trial_config)
    done = studies.finished(trials)
    return f"tunecv: interrupted; the study keeps its {done} finished trial{'' if done == 1 else 's'}{again}; " \
           f"continue with the same command: {search.command}"


def write_reports(study: Study, search: Search, trial_config: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """sweep.csv, sweep.png and best.yaml in the sweep folder, from every trial of the study so far (other
    workers' too)."""
    trials = study.get_trials(deepcopy=False)
    rows = report.trial_rows(trials, search.space, search.metric)
    out = search.out_dir
    report.write_csv(rows, report.csv_columns(search.space, search.metric), out / "sweep.csv")
    plot_sweep(rows, search.space, search.metric, out / "sweep.png")
    best = studies.best_trial(trials, search.metric)
    if best is not None:
        values = report.best_config(best, trials, out, trial_config)
        report.write_best_yaml(values, best, search.space, search.metric, out / "best.yaml")


def drop_checkpoints(folder: Path, keep: str) -> None:
    """A finished trial's checkpoints that `keep` does not keep, deleted. best: `_last` goes (it only resumes a run,
    and a trial is never resumed: an interrupted one runs again from its start); none: every checkpoint goes;
    all: none goes. config.yaml, the results and train.log stay (best.yaml is made from them)."""
    if keep == "all":
        return
    if keep == "best":
        doomed = list(folder.glob("*_last.pth"))
    else:
        weights = list(folder.glob("*.safetensors"))
        doomed = [*folder.glob("*.pth"), *weights, *(path.with_suffix(".json") for path in weights)]  # + sidecars
    for path in doomed:
        path.unlink(missing_ok=True)


def best_words(trials: list[FrozenTrial], search: Search) -> str:
    best = studies.best_trial(trials, search.metric)
    if best is None:
        return "no trial finished unpruned"
    return f"best {report.score(search.metric, best.value)}, trial {best.number} " \
           f"({describe({k: best.params.get(k) for k in search.space})})"


def summary(trials: list[FrozenTrial], search: Search) -> str:
    """The closing lines: counts, the ranked table, where the reports are."""
    states = [t.state for t in trials if not t.user_attrs.get("surplus")]
    done = studies.finished(trials)
    counts = f"{done} of {search.trials} trials finished ({states.count(TrialState.COMPLETE)} complete, " \
             f"{states.count(TrialState.PRUNED)} pruned)"
    if done < search.trials:
        counts += f"; the other {search.trials - done} run in other processes"
    rows = report.trial_rows(trials, search.space, search.metric)
    lines = [f"tunecv: {counts}; {best_words(trials, search)}", "",
             report.ranked_table(rows, search.space, search.metric), ""]
    out = search.out_dir
    if (out / "best.yaml").is_file():
        lines.append(f"  best recipe: {out / 'best.yaml'} (python finetune.py --config {out / 'best.yaml'})")
    lines.append(f"  all trials: {out / 'sweep.csv'}, {out / 'sweep.png'}")
    return "\n".join(lines)
