"""The shipped recipes reach their accuracy on real data, end to end, as a user runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HYMENOPTERA = Path(os.environ.get("TUNECV_HYMENOPTERA", ROOT.parent / "shared" / "data" / "hymenoptera_data"))


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def best_top1(results: Path) -> float:
    match = re.search(r"^best top1 ([\d.]+) at epoch (\d+)$", results.read_text(), re.MULTILINE)
    assert match, results.read_text()
    return float(match.group(1))


def validate_top1(ckpt: Path) -> float:
    done = run_script("validate.py", "--ckpt_path", str(ckpt))
    assert done.returncode == 0, done.stderr
    return float(re.search(r"top1 ([\d.]+)", done.stdout).group(1))


def test_demo_digits_reaches_95(tmp_path: Path) -> None:
    done = run_script("finetune.py", "--config", "configs/demo.yaml", "--ckpt_save_dir", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    top1 = best_top1(tmp_path / "results.txt")
    assert top1 >= 95.0
    assert validate_top1(tmp_path / "tf_efficientnet_lite0_best.pth") == pytest.approx(top1, abs=0.005)


@pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason=f"hymenoptera data not found at {HYMENOPTERA}")
def test_hymenoptera_recipe_reaches_92_on_cached_features(tmp_path: Path) -> None:
    done = run_script("finetune.py", "--config", "configs/hymenoptera.yaml", "--data_dir", str(HYMENOPTERA),
                      "--num_classes", "2", "--pretrained", "--ckpt_save_dir", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    top1 = best_top1(tmp_path / "results.txt")
    assert top1 >= 92.0
    assert "feature cache: train, 1 view x 245 images" in (tmp_path / "train.log").read_text()
    assert validate_top1(tmp_path / "tf_efficientnet_lite0_best.pth") == pytest.approx(top1, abs=0.005)
