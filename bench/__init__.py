"""Benchmarks: scripts that print figures (run from the project root as `python -m bench.<name>`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the ants/bees photos, where ../shared/data/README.md puts them (tests read the same variable)
HYMENOPTERA = os.environ.get("TUNECV_HYMENOPTERA", str(ROOT.parent / "shared" / "data" / "hymenoptera_data"))


def run_finetune(config: str | Path, data_dir: str, seed: int, out: str | Path, *extra: str) -> tuple[dict, float]:
    """finetune.py in a fresh process, as a user runs it: (its metrics.json, wall seconds from launch)."""
    command = [sys.executable, "finetune.py", "--config", str(config), "--data_dir", data_dir, "--seed", str(seed),
               "--ckpt_save_dir", str(out), *extra]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads((Path(out) / "metrics.json").read_text()), wall
