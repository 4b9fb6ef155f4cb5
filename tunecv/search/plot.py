"""sweep.png: the search history (each trial's score by trial number, the running best, pruned trials marked) and
one panel per searched key (its value against the score: a log axis for a log range, a strip per choice)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from tunecv.search.report import metric_name, sign
from tunecv.search.space import Param, format_value
from tunecv.utils.fileio import atomic_target

COLUMNS = 3
JITTER = 0.12  # half-width of a choice's strip, in choice positions
SHOWN = ("complete", "pruned")


def plot_sweep(rows: list[dict[str, Any]], space: dict[str, Param], metric: str, path: str | os.PathLike) -> Path:
    """Draw sweep.png from sweep.csv's rows (`tunecv.search.report.trial_rows`)."""
    panels = 1 + len(space)
    columns = min(COLUMNS, panels)
    lines = math.ceil(panels / columns)
    fig = Figure(figsize=(4.2 * columns, 3.4 * lines), dpi=100)
    axes = fig.subplots(lines, columns, squeeze=False).ravel()
    scored = [row for row in rows if row["state"] in SHOWN and row[metric] is not None]
    _history(axes[0], scored, metric)
    for ax, param in zip(axes[1:], space.values()):
        _param_panel(ax, scored, param, metric)
    for ax in axes[panels:]:
        ax.set_visible(False)
    fig.tight_layout()
    with atomic_target(path) as tmp:
        fig.savefig(tmp, format="png")  # the temp name's suffix is .tmp, so name the format
    return Path(path)


def _label(metric: str) -> str:
    return f"{metric_name(metric)}{' (%)' if metric == 'top1' else ''}"


def _split(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return [r for r in rows if r["state"] == "complete"], [r for r in rows if r["state"] == "pruned"]


def _history(ax, rows: list[dict[str, Any]], metric: str) -> None:
    complete, pruned = _split(rows)
    ax.plot([r["number"] for r in complete], [r[metric] for r in complete], "o", label="finished")
    if pruned:  # at the best epoch they reached
        ax.plot([r["number"] for r in pruned], [r[metric] for r in pruned], "x", color="grey", label="pruned")
    best, steps = None, []
    for row in complete:
        if best is None or sign(metric) * row[metric] > sign(metric) * best:
            best = row[metric]
        steps.append((row["number"], best))
    if steps:
        steps.append((max(r["number"] for r in rows), steps[-1][1]))  # to the last trial drawn
        ax.step(*zip(*steps), where="post", color="tab:red", label="best so far")
    ax.set_title("search history")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(_label(metric))
    if rows:
        ax.legend(fontsize=7)


def _param_panel(ax, rows: list[dict[str, Any]], param: Param, metric: str) -> None:
    complete, pruned = _split(rows)
    if param.kind == "choice":
        position = {format_value(choice): i for i, choice in enumerate(param.choices)}

        def xs(group: list[dict[str, Any]]) -> list[float]:
            # a fixed spread within the strip (by trial number): the picture does not change between redraws
            return [position[format_value(r[param.key])] + JITTER * math.sin(r["number"] * 2.4) for r in group]

        ax.set_xticks(range(len(position)), list(position), rotation=20 if len(position) > 3 else 0, fontsize=8)
        ax.set_xlim(-0.5, len(position) - 0.5)
    else:
        def xs(group: list[dict[str, Any]]) -> list[float]:
            return [r[param.key] for r in group]

        if param.log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on a short range
    ax.plot(xs(complete), [r[metric] for r in complete], "o", alpha=0.8)
    if pruned:
        ax.plot(xs(pruned), [r[metric] for r in pruned], "x", color="grey")
    ax.set_title(f"{param.key} ({param.spec()})", fontsize=9)
    ax.set_ylabel(_label(metric))
