"""strategy: auto end to end: finetune.py measures on a held-out slice of train, logs the table, trains the chosen
recipe, records it in config.yaml (which repeats the run), and a resumed run keeps it without measuring again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from conftest import TINY_MODEL, run_script

CHOICES = {"linear_probe", "lp_ft", "full"}


def _xor_images(root: Path, per_class: int) -> Path:
    """Class "same": a square in the left half on a dark background or in the right half on a light one; class
    "other": the two other combinations. No linear function of pooled features separates an exclusive or, so the
    linear probe leaves room and the partial fine-tunes are measured."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", per_class // 2)):
        for name in ("same", "other"):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                right, light = i % 2, (i % 2) ^ (name == "other")
                pixels = rng.integers(150, 230, (32, 32, 3)) if light else rng.integers(0, 80, (32, 32, 3))
                x, y = rng.integers(2, 10) + 16 * right, rng.integers(2, 24)
                pixels[y:y + 6, x:x + 6] = (255, 40, 40)
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i:02d}.png")
    return root


def _auto(data: Path, out: Path, *extra: str):
    return run_script("finetune.py", "--data_dir", str(data), "--model", TINY_MODEL, "--pretrained", "false",
                      "--image_resize", "32", "--batch_size", "4", "--epoch_size", "2", "--num_parallel_workers", "0",
                      "--device", "cpu", "--seed", "1", "--strategy", "auto", "--ckpt_save_dir", str(out), *extra)


def test_auto_measures_logs_records_and_resumes_its_choice(tmp_path):
    data = _xor_images(tmp_path / "images", per_class=30)
    out = tmp_path / "run"
    proc = _auto(data, out)
    log = (out / "train.log").read_text()
    table = [line for line in log.splitlines() if "strategy auto:" in line]
    assert len(table) == 1, log[-2000:]
    assert "measured on 12 training images held out (48 trained on)" in table[0]  # a fifth of each class's 30
    assert "linear probe (logistic regression on the frozen features)" in log
    assert "the top two stages and the head" in log  # the tiny model splits into stages: a partial is measured
    assert "  decision: " in log and "strategy auto:" in proc.stderr + proc.stdout
    chosen = yaml.safe_load((out / "config.yaml").read_text())
    strategy = chosen["strategy"]
    assert strategy in CHOICES or strategy.startswith("freeze:"), strategy
    assert table[0].split("strategy auto: ")[1].startswith(f"{strategy},")
    if strategy.startswith("freeze:"):
        assert chosen["frozen_stages"] == int(strategy.split(":")[1])
    if strategy == "linear_probe":
        assert chosen["freeze"] == "all"

    run_script("finetune.py", "--config", str(out / "config.yaml"), "--resume", "auto", "--epoch_size", "3",
               "--strategy", "auto")
    extended = (out / "train.log").read_text()[len(log):]
    assert "strategy auto:" not in extended  # the choice comes from the checkpoint, not a second measurement
    assert "extending the run from 2 to 3 epochs" in extended
    assert yaml.safe_load((out / "config.yaml").read_text())["strategy"] == strategy
    rows = [line for line in (out / "results.txt").read_text().splitlines() if line[:1].isdigit()]
    assert [row.split()[0] for row in rows] == ["1", "2", "3"]
