"""The mistakes users make, walked through the real scripts: each ends in one line naming the problem and the fix,
its exit code, no traceback, and every file of the workspace as it was (a finished run folder among them).

The table is also `bench/mistakes.py`'s (the before / after figures of a release note)."""

from __future__ import annotations

import hashlib
import pickle
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, SCRIPT_ENV, TINY_MODEL, write_image_folder

RUN = "run"  # a finished two-epoch run of the tiny model on `data`
BEST, LAST = f"{RUN}/{TINY_MODEL}_best.pth", f"{RUN}/{TINY_MODEL}_last.pth"
TRAIN = ["--data_dir", "data", "--model", TINY_MODEL, "--pretrained", "false", "--image_resize", "32",
         "--batch_size", "4", "--epoch_size", "1", "--num_parallel_workers", "0", "--device", "cpu"]
SWEEP = [*TRAIN, "--trials", "2", "--ckpt_save_dir", "sweep"]


@dataclass(frozen=True)
class Mistake:
    name: str
    script: str
    args: tuple[str, ...]
    says: tuple[str, ...]  # what the one line must name, lower case
    code: int = 2


def _m(name: str, script: str, args: list[str], *says: str, code: int = 2) -> Mistake:
    return Mistake(name, script, tuple(args), says, code)


MISTAKES = [
    _m("config file not found", "finetune.py", ["--config", "nope.yaml"], "nope.yaml", "not found"),
    _m("invalid YAML", "finetune.py", ["--config", "broken.yaml"], "broken.yaml:2:", "lr: 0.1: 2"),
    _m("binary file as config", "finetune.py", ["--config", "noise.bin"], "noise.bin", "yaml"),
    _m("typo in a key", "finetune.py", [*TRAIN, "--lrr", "0.1"], "lrr", "'lr'"),
    _m("timm/HF name learning_rate", "finetune.py", [*TRAIN, "--learning_rate", "0.1"], "'learning_rate'", "'lr'"),
    _m("timm name img_size", "finetune.py", [*TRAIN, "--img_size", "64"], "'img_size'", "'image_resize'"),
    _m("torch name num_workers", "finetune.py", [*TRAIN, "--num_workers", "2"], "'num_workers'",
       "'num_parallel_workers'"),
    _m("timm name sched", "finetune.py", [*TRAIN, "--sched", "cosine"], "'sched'", "'scheduler'"),
    _m("HF name output_dir", "finetune.py", [*TRAIN, "--output_dir", "out"], "'output_dir'", "'ckpt_save_dir'"),
    _m("key in YAML from another tool", "finetune.py", ["--config", "foreign.yaml"], "'per_device_train_batch_size'",
       "'batch_size'"),
    _m("not a number", "finetune.py", [*TRAIN, "--batch-size", "abc"], "batch_size", "abc"),
    _m("batch size 0", "finetune.py", [*TRAIN, "--batch_size", "0"], "batch_size"),
    _m("unknown model", "finetune.py", [*TRAIN, "--model", "resnet5O"], "resnet5o"),
    _m("unknown scheduler", "finetune.py", [*TRAIN, "--scheduler", "onecycle"], "onecycle", "cosine_decay"),
    _m("data_dir missing", "finetune.py", [*TRAIN, "--data_dir", "nowhere"], "nowhere"),
    _m("data_dir without images", "finetune.py", [*TRAIN, "--data_dir", "empty"], "empty"),
    _m("num_classes disagrees with the data", "finetune.py", [*TRAIN, "--num_classes", "5"], "num_classes", "3"),
    _m("text file as ckpt_path", "finetune.py", [*TRAIN, "--ckpt_path", "notes.txt"], "notes.txt", "checkpoint"),
    _m("truncated ckpt_path", "finetune.py", [*TRAIN, "--ckpt_path", "truncated.pth"], "truncated.pth"),
    _m("pickled object as ckpt_path", "finetune.py", [*TRAIN, "--ckpt_path", "pickled.pth"], "pickled.pth"),
    _m("a second run into a finished folder", "finetune.py", [*TRAIN, "--ckpt_save_dir", RUN], "earlier run",
       "--resume auto"),
    _m("resume a finished run", "finetune.py", [*TRAIN, "--ckpt_save_dir", RUN, "--resume", "auto", "--epoch_size",
                                                "2"], "finished at epoch 2", "--epoch_size", code=0),
    _m("resume with fewer epochs than trained", "finetune.py",
       [*TRAIN, "--ckpt_save_dir", RUN, "--resume", "auto"], "trained 2 epochs", "--epoch_size 3"),
    _m("resume on other data", "finetune.py",
       [*TRAIN, "--ckpt_save_dir", RUN, "--resume", "auto", "--epoch_size", "3", "--data_dir", "other"],
       "not the run being resumed", "--resume_force"),
    _m("resume with other layers frozen", "finetune.py",
       [*TRAIN, "--ckpt_save_dir", RUN, "--resume", "auto", "--epoch_size", "3", "--freeze", "all"],
       "other parameters would train", "--resume_force"),
    _m("resume from a _best checkpoint", "finetune.py", [*TRAIN, "--resume", BEST, "--epoch_size", "3"],
       "no training state", "_last.pth"),
    _m("resume: a folder given", "finetune.py", [*TRAIN, "--resume", RUN, "--epoch_size", "3"], "is a folder",
       "--resume auto"),
    _m("resume auto with no run", "finetune.py", [*TRAIN, "--ckpt_save_dir", "fresh", "--resume", "auto"],
       "found no", "without --resume"),
    _m("strategy auto with a freeze key", "finetune.py", [*TRAIN, "--strategy", "auto", "--freeze", "all"],
       "auto", "freeze"),
    _m("strategy auto with an unfreeze key", "finetune.py",
       [*TRAIN, "--strategy", "auto", "--unfreeze_lr_scale", "0.1"], "auto", "unfreeze_lr_scale"),
    _m("sweep: range ends swapped", "sweep.py", [*SWEEP, "--search", "lr=0.1:0.01"], "lr=0.1:0.01", "low end"),
    _m("sweep: a key given and searched", "sweep.py", [*SWEEP, "--search", "lr=0.1,0.2", "--lr", "0.3"],
       "lr", "searched"),
    _m("sweep: typo in a searched key", "sweep.py", [*SWEEP, "--search", "lrr=0.1,0.2"], "lrr", "'lr'"),
    _m("sweep: a choice the config refuses", "sweep.py", [*SWEEP, "--search", "strategy=full,lp-fast"], "lp-fast",
       "'lp_ft'"),
    _m("sweep: no --ckpt_save_dir", "sweep.py", [*TRAIN, "--search", "lr=0.1,0.2", "--trials", "2"],
       "--ckpt_save_dir"),
    _m("sweep: --resume", "sweep.py", [*SWEEP, "--search", "lr=0.1,0.2", "--resume", "auto"], "--resume"),
    _m("sweep: data_dir missing", "sweep.py", [*SWEEP, "--search", "lr=0.1,0.2", "--data_dir", "nowhere"],
       "nowhere"),
    _m("sweep: into a finished run's folder", "sweep.py",
       [*TRAIN, "--search", "lr=0.1,0.2", "--trials", "2", "--ckpt_save_dir", RUN], RUN, "holds a finetune.py run"),
    _m("MindCV model with no equivalent", "finetune.py", [*TRAIN, "--model", "pvt_tiny"], "pvt_tiny", "pvt_v2_b1"),
    _m("aux_factor on a model without one", "finetune.py", [*TRAIN, "--aux_factor", "0.1"], "aux_factor",
       "remove aux_factor"),
    _m("inception's auxiliary head below its size", "finetune.py",
       [*TRAIN, "--model", "inception_v3", "--aux_factor", "0.1", "--image_resize", "160"],
       "cannot run on 160 px", "image_resize 299"),
    _m("pretrained MindCV width timm has no weights for", "finetune.py",
       [*TRAIN, "--model", "rexnet_09", "--pretrained", "true"], "no imagenet weights", "pretrained false"),
    _m("a run that crashed before its first checkpoint", "finetune.py", [*TRAIN, "--ckpt_save_dir", "crashed"],
       "before saving a checkpoint", "--overwrite"),
    _m("validate: checkpoint not found", "validate.py", ["--ckpt_path", "nope.pth"], "nope.pth", "not found"),
    _m("validate: text file", "validate.py", ["--ckpt_path", "notes.txt"], "notes.txt", "checkpoint"),
    _m("validate: empty file", "validate.py", ["--ckpt_path", "empty.pth"], "empty.pth", "checkpoint"),
    _m("validate: truncated checkpoint", "validate.py", ["--ckpt_path", "truncated.pth"], "truncated.pth"),
    _m("validate: random bytes", "validate.py", ["--ckpt_path", "noise.bin"], "noise.bin", "checkpoint"),
    _m("validate: a folder", "validate.py", ["--ckpt_path", RUN], RUN),
    _m("validate: data with other classes", "validate.py", ["--ckpt_path", BEST, "--data_dir", "other"],
       "class"),
    _m("predict: no image readable", "predict.py", ["--ckpt_path", BEST, "broken_images"], "broken_images"),
    _m("predict: path not found", "predict.py", ["--ckpt_path", BEST, "missing.jpg"], "missing.jpg"),
    _m("predict: a pickled object", "predict.py", ["--ckpt_path", "pickled.pth", "data/val"], "pickled.pth"),
    _m("export: unknown format", "export.py", ["--ckpt_path", BEST, "--format", "onnxx"], "onnxx"),
    _m("export: truncated checkpoint", "export.py", ["--ckpt_path", "truncated.pth", "--format", "safetensors"],
       "truncated.pth"),
]


def write_workspace(root: Path, repo: Path = ROOT) -> Path:
    """Data, a finished run (trained by `repo`'s finetune.py) and the odd files the mistakes use."""
    write_image_folder(root / "data", train_per_class=4, val_per_class=2)
    write_image_folder(root / "other", train_per_class=4, val_per_class=2, classes=("cat", "dog"))
    (root / "empty" / "train").mkdir(parents=True)
    subprocess.run([sys.executable, str(repo / "finetune.py"), *TRAIN, "--epoch_size", "2", "--ckpt_save_dir", RUN],
                   cwd=root, env=SCRIPT_ENV, capture_output=True, check=True, timeout=300)
    (root / "crashed").mkdir()  # what a run that failed in its first epoch leaves
    shutil.copy(root / RUN / "run.json", root / "crashed" / "run.json")
    (root / "crashed" / "results.txt").write_text((root / RUN / "results.txt").read_text().splitlines()[0] + "\n")
    (root / "broken.yaml").write_text("model: test_efficientnet\nlr: 0.1: 2\n", encoding="utf-8")
    (root / "foreign.yaml").write_text("data_dir: data\nper_device_train_batch_size: 8\n", encoding="utf-8")
    (root / "noise.bin").write_bytes(bytes(range(256)) * 8)
    (root / "notes.txt").write_text("not a checkpoint\n", encoding="utf-8")
    (root / "empty.pth").write_bytes(b"")
    best = (root / BEST).read_bytes()
    (root / "truncated.pth").write_bytes(best[: len(best) // 2])
    (root / "pickled.pth").write_bytes(pickle.dumps(Mistake("a", "b", (), ())))
    (root / "broken_images").mkdir()
    (root / "broken_images" / "a.jpg").write_text("not an image", encoding="utf-8")
    (root / "broken_images" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return root


def _digest(root: Path) -> dict[str, str]:
    """Every file's content and every folder (an empty run folder left behind counts)."""
    return {str(path.relative_to(root)): hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            for path in sorted(root.rglob("*"))}


def attempt(template: Path, target: Path, mistake: Mistake, repo: Path = ROOT
            ) -> tuple[subprocess.CompletedProcess, bool]:
    """`mistake` made in a copy of the workspace by `repo`'s script: its process, and whether no file changed."""
    shutil.copytree(template, target)
    before = _digest(target)
    proc = subprocess.run([sys.executable, str(repo / mistake.script), *mistake.args], cwd=target, env=SCRIPT_ENV,
                          capture_output=True, text=True, timeout=300)
    return proc, _digest(target) == before


@pytest.fixture(scope="module")
def attempts(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, bool]]:
    """Every mistake, each in its own copy of the workspace, two at a time (the runs are mostly start-up)."""
    base = tmp_path_factory.mktemp("mistakes")
    template = write_workspace(base / "template")
    with ThreadPoolExecutor(2) as pool:
        futures = {m.name: pool.submit(attempt, template, base / f"case{i}", m) for i, m in enumerate(MISTAKES)}
    return {name: future.result() for name, future in futures.items()}


def test_the_battery_is_broad():
    assert len(MISTAKES) >= 30 and {m.script for m in MISTAKES} == {"finetune.py", "validate.py", "predict.py",
                                                                     "export.py", "sweep.py"}


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.name for m in MISTAKES])
def test_a_mistake_gets_one_line_and_changes_nothing(attempts, mistake: Mistake):
    proc, unchanged = attempts[mistake.name]
    output = (proc.stderr + proc.stdout).strip()
    assert proc.returncode == mistake.code, output[-2000:]
    assert "Traceback" not in output
    lines = output.splitlines()
    assert len(lines) == 1, output[-2000:]
    line = lines[0].lower()
    assert line.startswith("tunecv: error: " if mistake.code else "tunecv: ")
    assert all(part.lower() in line for part in mistake.says), line
    assert "; " in line, line  # the problem; then the fix
    assert unchanged, "the command changed files it found"
