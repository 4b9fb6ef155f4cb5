"""The fixed recipes, `strategy: auto` and a recipe search, side by side on the offline data: ants/bees (ImageNet
classes, the probe is already good) and the digits demo (far from ImageNet). Prints a markdown table per data set
(best top-1 on the validation set, wall time of the whole command) to --markdown, and one JSON line.

    python -m bench.recipes --trials 12 --markdown /tmp/recipes.md
    python -m bench.recipes --data digits --trials 12 --out /tmp/recipes
    python -m bench.recipes --seeds 0 1 42 --trials 12 --out /tmp/recipes   # fixed recipes and auto per seed

Every run is the command a user types (`finetune.py` / `sweep.py` in a subprocess), one at a time. With --out, a
run whose folder already holds its result (wall_s.json, written last) is read back, not trained again, so a
stopped benchmark goes on (a run it stopped in starts again) and more seeds can be added to one already run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from bench import HYMENOPTERA, ROOT

FIXED = ("linear_probe", "freeze:5", "lp_ft", "full")
# name: (config, extra flags, the sweep's lr range around the config's lr); ants/bees at 4 epochs, as
# docs/results.md's strategies table
DATA = {
    "hymenoptera": ("configs/hymenoptera.yaml", ["--data_dir", HYMENOPTERA, "--epoch_size", "4"], "log:1e-3:3e-2"),
    "digits": ("configs/demo.yaml", [], "log:3e-4:6e-3"),
}


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def timed_once(done: Path, command: list[str]) -> float:
    """`command`'s wall time, run only when `done` does not hold it yet (then it is kept there)."""
    if done.is_file():
        return json.loads(done.read_text())["wall_s"]
    wall = timed(command)
    done.write_text(json.dumps({"wall_s": wall}))
    return wall


def finetune(config: str, extra: list[str], out: Path, *flags: str) -> dict:
    # a run stopped before its result was kept starts again (overwrite), so its wall time is whole
    wall = timed_once(out / "wall_s.json", ["finetune.py", "--config", config, *extra, "--ckpt_save_dir", str(out),
                                            "--overwrite", "true", *flags])
    metrics = json.loads((out / "metrics.json").read_text())
    chosen = yaml.safe_load((out / "config.yaml").read_text())["strategy"]
    return {"top1": metrics["best_top1"], "wall_s": wall, "strategy": chosen}


def seeded(config: str, extra: list[str], folder: Path, strategy: str, seeds: list[int] | None) -> dict:
    """One recipe over `seeds` (None: the config's own): the mean top-1 and wall time, and each seed's run."""
    runs = [finetune(config, extra, folder, "--strategy", strategy)] if seeds is None else [
        finetune(config, extra, folder.with_name(f"{folder.name}_seed{seed}"), "--strategy", strategy, "--seed",
                 str(seed)) for seed in seeds]
    return {"top1": sum(r["top1"] for r in runs) / len(runs), "wall_s": sum(r["wall_s"] for r in runs) / len(runs),
            "strategy": ",".join(dict.fromkeys(r["strategy"] for r in runs)), "runs": runs}


def sweep(config: str, extra: list[str], lr_range: str, trials: int, out: Path) -> dict:
    search = [f"lr={lr_range}", f"strategy={','.join(FIXED)}", "label_smoothing=0:0.2"]
    wall = timed_once(out / f"wall_s_{trials}.json", ["sweep.py", "--config", config, *extra, "--search", *search,
                                                      "--trials", str(trials), "--ckpt_save_dir", str(out)])
    with open(out / "sweep.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["state"] == "complete" and r["top1"]]
    if not rows:
        raise SystemExit(f"no trial of {out} completed; see its sweep.csv")
    best = max(rows, key=lambda r: float(r["top1"]))
    return {"top1": float(best["top1"]), "wall_s": wall, "strategy": best["strategy"],
            "recipe": {k: best[k] for k in ("lr", "strategy", "label_smoothing")}, "search": " ".join(search)}


def bench(name: str, trials: int, seeds: list[int] | None, root: Path) -> dict:
    config, extra, lr_range = DATA[name]
    rows = {s: seeded(config, extra, root / name / s.replace(":", ""), s, seeds) for s in (*FIXED, "auto")}
    if trials:
        rows["sweep"] = sweep(config, extra, lr_range, trials, root / name / "sweep")
    return rows


def verdict(rows: dict) -> str:
    fixed = {k: v for k, v in rows.items() if k in FIXED}
    best = max(v["top1"] for v in fixed.values())
    near = [v for v in fixed.values() if v["top1"] >= best - 1.0]
    cheapest = min(v["wall_s"] for v in near)
    auto = rows["auto"]
    lines = [f"auto chose {auto['strategy']}: {auto['top1'] - best:+.2f} points from the best fixed recipe "
             f"({best:.2f} %), in {auto['wall_s'] / cheapest:.2f}x the time of the fastest fixed recipe within a "
             "point of it"]
    if "sweep" in rows:
        lines.append(f"the sweep's best: {rows['sweep']['top1'] - best:+.2f} points from the best fixed recipe")
    return "; ".join(lines)


def markdown(name: str, rows: dict) -> str:
    lines = [f"### {name}", "", "| recipe | strategy | best top-1 (%), mean | per seed | wall time (s), mean |",
             "|---|---|---|---|---|"]
    for key, row in rows.items():
        label = f"`--strategy {key}`" if key in FIXED or key == "auto" else f"sweep.py, {row.get('search', '')}"
        per_seed = " / ".join(f"{run['top1']:.2f}" for run in row.get("runs", [row]))
        lines.append(f"| {label} | {row['strategy']} | {row['top1']:.2f} | {per_seed} | {row['wall_s']:.0f} |")
    return "\n".join([*lines, "", verdict(rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", choices=tuple(DATA), default=list(DATA))
    parser.add_argument("--trials", type=int, default=12, help="the sweep's trials (0: no sweep)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="run the fixed recipes and auto once per seed (default: once, with the config's seed; "
                             "the sweep always uses the config's seed)")
    parser.add_argument("--out", default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--markdown", default=None, help="write the tables here (docs/results.md's section)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="tunecv-recipes-"))
    results = {name: bench(name, args.trials, args.seeds, root) for name in args.data}
    if args.markdown:
        Path(args.markdown).write_text("\n\n".join(markdown(name, rows) for name, rows in results.items()) + "\n")
    print(json.dumps({"machine": platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
                      "cuda": torch.cuda.is_available(), "trials": args.trials, "seeds": args.seeds,
                      "results": results}))


if __name__ == "__main__":
    main()
