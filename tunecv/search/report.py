"""A recipe search's reports, from its study's trials: sweep.csv (one row per trial), the console's line per
finished trial and its ranked table, and best.yaml (the best trial's config, to train it again with finetune.py)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from optuna.trial import FrozenTrial, TrialState

from tunecv.finetune.strategies import AUTO
from tunecv.search.space import Param, describe, format_value
from tunecv.search.study import direction
from tunecv.utils.fileio import atomic_write_text

TOP = 10  # rows of the ranked table
RUN_KEYS = {"resume": None, "resume_force": False, "overwrite": False}  # a new run, whatever the trial's were


def metric_name(metric: str) -> str:
    return "top-1" if metric == "top1" else metric


def amount(metric: str, value: float | None) -> str:
    """`97.50 %` (top-1), `41.20` (a mAP), `-` (none)."""
    return "-" if value is None else f"{value:.2f}{' %' if metric == 'top1' else ''}"


def score(metric: str, value: float | None) -> str:
    """`top-1 97.50 %`, `bbox_mAP 41.20`."""
    return f"no {metric_name(metric)}" if value is None else f"{metric_name(metric)} {amount(metric, value)}"


def sign(metric: str) -> int:
    """1 when a higher score is better, -1 when lower is."""
    return 1 if direction(metric).name == "MAXIMIZE" else -1


def trial_score(trial: FrozenTrial, metric: str) -> tuple[float | None, int | None]:
    """(best value, its epoch): a finished run's; a pruned or stopped one's best validated epoch so far."""
    if trial.state == TrialState.COMPLETE:
        return trial.value, trial.user_attrs.get("best_epoch")
    if not trial.intermediate_values:
        return None, None
    epoch = max(trial.intermediate_values, key=lambda e: (sign(metric) * trial.intermediate_values[e], -e))
    return trial.intermediate_values[epoch], epoch


def trial_rows(trials: list[FrozenTrial], space: dict[str, Param], metric: str) -> list[dict[str, Any]]:
    """sweep.csv's rows, by trial number (a surplus trial, which ran nothing, left out)."""
    rows = []
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.user_attrs.get("surplus"):
            continue
        value, epoch = trial_score(trial, metric)
        # a queued trial (a retry) has its values as Optuna's fixed params until it starts
        params = trial.params or trial.system_attrs.get("fixed_params", {})
        values = {key: params.get(key) for key in space}
        if searches_auto(space):
            values["auto_chose"] = trial.user_attrs.get("auto_chose")
        rows.append({"number": trial.number, "state": trial.state.name.lower(), **values, metric: value,
                     "best_epoch": epoch,
                     "time_s": trial.user_attrs.get("time_s"), "run_folder": trial.user_attrs.get("folder", ""),
                     "same_as": trial.user_attrs.get("same_as")})
    return rows


def write_csv(rows: list[dict[str, Any]], columns: list[str], path: str | os.PathLike) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    atomic_write_text(path, text.getvalue())


def searches_auto(space: dict[str, Param]) -> bool:
    """Whether `strategy=` offers auto: sweep.csv then says what auto chose in each trial (`auto_chose`)."""
    param = space.get("strategy")
    return param is not None and param.kind == "choice" and AUTO in param.choices


def csv_columns(space: dict[str, Param], metric: str) -> list[str]:
    chose = ["auto_chose"] if searches_auto(space) else []
    return ["number", "state", *space, *chose, metric, "best_epoch", "time_s", "run_folder", "same_as"]


def trial_line(trial: FrozenTrial, space: dict[str, Param], metric: str, best: FrozenTrial | None,
               counts: tuple[int, int]) -> str:
    """The console's line for a trial that ended: `trial 3 [4/12]: lr=0.0031 strategy=full: top-1 97.50 % (best
    98.10 %, trial 1) 41 s`, or how it was pruned, or why its values were refused."""
    attrs = trial.user_attrs
    # queued again by this sweep (retry_of), or by Optuna's heartbeat for another machine's dead worker
    retry_of = attrs.get("retry_of", trial.system_attrs.get("failed_trial"))
    retried = f" (retry of trial {retry_of})" if retry_of is not None else ""
    chose = f" (auto chose {attrs['auto_chose']})" if "auto_chose" in attrs else ""
    head = f"trial {trial.number} [{counts[0]}/{counts[1]}]{retried}: " \
           f"{describe({key: trial.params.get(key) for key in space})}{chose}:"
    seconds = f"{attrs.get('time_s', 0):.0f} s"
    if "same_as" in attrs:
        return f"{head} the values of trial {attrs['same_as']}, {score(metric, trial.value)} (not trained again)"
    if trial.state == TrialState.COMPLETE:
        lead = "" if best is None else f" (best {amount(metric, best.value)}, trial {best.number})"
        return f"{head} {score(metric, trial.value)}{lead} {seconds}"
    if "diverged" in attrs:
        return f"{head} diverged ({attrs['diverged']}) {seconds}"
    if "refused" in attrs:
        return f"{head} refused: {attrs['refused']}"
    if trial.state == TrialState.PRUNED:
        return f"{head} pruned at epoch {attrs.get('pruned_epoch')} ({score(metric, trial_score(trial, metric)[0])}) " \
               f"{seconds}"
    return f"{head} {trial.state.name.lower()}"


def _cell(row: dict[str, Any], key: str) -> str:
    chose = row.get("auto_chose") if key == "strategy" else None
    return f"auto ({chose})" if chose else format_value(row[key])


def ranked_table(rows: list[dict[str, Any]], space: dict[str, Param], metric: str, top: int = TOP) -> str:
    """The finished trials, best first (the first `top`)."""
    done = [row for row in rows if row["state"] == "complete" and row[metric] is not None]
    done.sort(key=lambda row: (-sign(metric) * row[metric], row["number"]))
    header = ["rank", "trial", metric_name(metric), *space, "epoch", "time"]
    lines = [[str(rank), str(row["number"]), amount(metric, row[metric]),
              *(_cell(row, key) for key in space), format_value(row["best_epoch"]),
              "-" if row["same_as"] is not None else f"{row['time_s'] or 0:.0f} s"]
             for rank, row in enumerate(done[:top], 1)]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()
                     for cells in [header, *lines])


def best_config(best: FrozenTrial, trials: list[FrozenTrial], out_dir: Path,
                fallback: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """The best trial's resolved config (its run folder's config.yaml; `fallback(values)` when that folder is on
    another machine), as a new run in <ckpt_save_dir>/best."""
    trained = next((t for t in trials if t.number == best.user_attrs.get("same_as")), best)
    path = Path(trained.user_attrs.get("folder", "")) / "config.yaml"
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        values = None
    if not isinstance(values, dict):  # auto's choice, not auto: best.yaml trains what the trial trained
        chose = {"strategy": best.user_attrs["auto_chose"]} if "auto_chose" in best.user_attrs else {}
        values = fallback({**best.params, **chose})
    return {**values, **RUN_KEYS, "ckpt_save_dir": str(out_dir / "best")}


def write_best_yaml(values: dict[str, Any], best: FrozenTrial, space: dict[str, Param], metric: str,
                    path: Path) -> None:
    header = (f"# the recipe search's best trial: trial {best.number}, {score(metric, best.value)}\n"
              f"# {describe({key: best.params.get(key) for key in space})}\n"
              f"# train it again: python finetune.py --config {path}\n")
    atomic_write_text(path, header + yaml.safe_dump(values, sort_keys=False))
