"""Stopping and resuming, end to end in subprocesses: a run killed (SIGKILL) or stopped (SIGTERM, Ctrl-C)
mid-epoch and resumed writes the results.txt of the uninterrupted run; runs are never overwritten silently; a
nan loss stops the run without saving bad weights."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_MODEL, write_image_folder

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# 24 training images in batches of 4: 6 steps an epoch; `_last` every 2 steps
ARGS = ("--model", TINY_MODEL, "--pretrained", "false", "--image_resize", "32", "--batch_size", "4",
        "--epoch_size", "3", "--lr", "0.01", "--device", "cpu", "--seed", "7", "--cache_images", "none",
        "--ckpt_save_steps", "2")
LAST = f"{TINY_MODEL}_last.pth"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("resume") / "images")


@pytest.fixture(scope="module")
def whole_run(data_dir, tmp_path_factory) -> Path:
    """The folder of a run trained all its epochs without a stop (copy it before changing it)."""
    out = tmp_path_factory.mktemp("whole") / "ckpt"
    _finetune(data_dir, "--ckpt_save_dir", str(out), "--num_parallel_workers", "0")
    return out


@pytest.fixture(scope="module")
def uninterrupted(whole_run) -> list[list[str]]:
    return _columns(whole_run / "results.txt")


def _finetune(data_dir: Path, *extra: str, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "finetune.py"), "--data_dir", str(data_dir), *ARGS, *extra],
                          cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _columns(results: Path) -> list[list[str]]:
    """Every column of results.txt but time_s."""
    return [line.split()[:6] for line in results.read_text().splitlines()]


def _stop_at_epoch_2(data_dir: Path, signum: int, *extra: str, cwd: Path = ROOT,
                     trigger: str = f"saved {LAST} at epoch 2 step 8", group: bool = False) -> tuple[int, str]:
    """Start a run and send `signum` once a stderr line starts with `trigger` (default: `_last` written in the
    middle of epoch 2); `group`: to its whole process group, loader workers included (Ctrl-C in a terminal)."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "finetune.py"), "--data_dir", str(data_dir), *ARGS, *extra],
                            cwd=cwd, env=ENV, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=group)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith(trigger):
            if group:
                os.killpg(proc.pid, signum)
            else:
                proc.send_signal(signum)
            break
    rest = proc.stderr.read() if signum != signal.SIGKILL else ""
    return proc.wait(timeout=300), "".join(lines) + rest


def test_killed_mid_epoch_resumes_to_the_uninterrupted_results(data_dir, uninterrupted, tmp_path):
    out = tmp_path / "ckpt"
    code, _ = _stop_at_epoch_2(data_dir, signal.SIGKILL, "--ckpt_save_dir", str(out), "--num_parallel_workers", "2")
    assert code == -signal.SIGKILL
    assert len(_columns(out / "results.txt")) == 2  # the header and epoch 1
    state = torch.load(out / LAST, weights_only=True)
    assert state["epoch"] == 2 and state["epoch_progress"]["batches"] == 2 and state["global_step"] == 8
    # resumed with another worker count: each image's augmentation is seeded by its place, not by a worker
    proc = _finetune(data_dir, "--ckpt_save_dir", str(out), "--num_parallel_workers", "1", "--resume", "auto")
    assert "resumed at epoch 2 step 8" in proc.stderr
    assert _columns(out / "results.txt") == uninterrupted


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_exits_cleanly_and_prints_the_resume_command(data_dir, uninterrupted, tmp_path, signum):
    # no ckpt_save_dir: the run gets ./ckpt/<model>_<time>, and resume: auto finds it there
    # Ctrl-C in a terminal reaches the loader workers too; SIGTERM goes to the main process (as torchrun sends it)
    code, stderr = _stop_at_epoch_2(data_dir, signum, "--num_parallel_workers", "2", cwd=tmp_path,
                                    group=signum == signal.SIGINT)
    assert code == 128 + signum, stderr[-2000:]
    assert "Traceback" not in stderr
    stopped = [line for line in stderr.splitlines() if line.startswith("tunecv: stopped by")]
    assert stopped and signal.Signals(signum).name in stopped[0]
    command = next(line for line in stderr.splitlines() if line.startswith("resume with: python finetune.py"))
    assert command.split()[-2] == "--resume"
    (run_dir,) = (tmp_path / "ckpt").iterdir()
    assert run_dir.name.startswith(f"{TINY_MODEL}_") and tmp_path / command.split()[-1] == run_dir / LAST
    _finetune(data_dir, "--num_parallel_workers", "0", "--resume", "auto", cwd=tmp_path)
    assert _columns(run_dir / "results.txt") == uninterrupted


def test_overwrite_replaces_an_earlier_run(data_dir, whole_run, tmp_path):
    """Without --overwrite the folder is refused (tests/test_user_mistakes.py); with it, the run starts afresh."""
    out = tmp_path / "ckpt"
    shutil.copytree(whole_run, out)
    before = (out / LAST).stat().st_mtime_ns
    _finetune(data_dir, "--ckpt_save_dir", str(out), "--epoch_size", "1", "--num_parallel_workers", "0",
              "--overwrite")
    assert (out / LAST).stat().st_mtime_ns != before and len(_columns(out / "results.txt")) == 3  # header, 1, best


def test_a_nan_loss_stops_the_run_and_saves_no_bad_weights(data_dir, tmp_path):
    out = tmp_path / "ckpt"
    proc = _finetune(data_dir, "--ckpt_save_dir", str(out), "--lr", "1e8", "--opt", "sgd", "--ckpt_save_steps", "1",
                     "--num_parallel_workers", "0", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line.startswith("tunecv: error: epoch 1 step ") and "not finite" in last_line
    assert "lower lr" in last_line
    if (out / LAST).exists():  # written before the loss went bad: its weights are finite
        weights = torch.load(out / LAST, weights_only=True)["model"]
        assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_a_second_ctrl_c_stops_at_once():
    from tunecv.train.resume import GracefulStop

    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_a_signal_during_logging_does_not_log_again(capfd):
    """A signal landing while a log line is being written must not log from the handler: re-entering the stream
    raised "reentrant call inside BufferedWriter" and a traceback once."""
    import logging

    from tunecv.train.resume import GracefulStop

    class SignalWhileEmitting(logging.Handler):
        depth = deepest = 0

        def emit(self, record):
            self.depth += 1
            self.deepest = max(self.deepest, self.depth)
            if self.depth == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            self.depth -= 1

    handler, log = SignalWhileEmitting(), logging.getLogger("tunecv")
    log.addHandler(handler)
    try:
        with GracefulStop() as stop:
            log.warning("a line being written")
    finally:
        log.removeHandler(handler)
    assert stop.signum == signal.SIGTERM and handler.deepest == 1
    assert "SIGTERM: stopping after this step" in capfd.readouterr().err


def test_resuming_on_other_data_is_refused_unless_forced(data_dir, tmp_path):
    import shutil

    out, changed = tmp_path / "ckpt", tmp_path / "images"
    shutil.copytree(data_dir, changed)
    code, _ = _stop_at_epoch_2(changed, signal.SIGTERM, "--ckpt_save_dir", str(out), "--num_parallel_workers", "0")
    assert code == 128 + signal.SIGTERM
    extra = next((changed / "train").iterdir()) / "extra.png"
    shutil.copy(next(p for p in (changed / "train").rglob("*.png")), extra)
    proc = _finetune(changed, "--ckpt_save_dir", str(out), "--resume", "auto", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "this is not the run being resumed: data differs" in line and "--resume_force" in line
    forced = _finetune(changed, "--ckpt_save_dir", str(out), "--resume", "auto", "--resume_force",
                       "--num_parallel_workers", "0")
    assert "resumed at epoch 2" in forced.stderr and "resume_force: resuming although the data differs" in forced.stderr


def test_resume_command_replaces_an_earlier_resume():
    from tunecv.train.resume import resume_command

    command = resume_command(["--config", "my x.yaml", "--resume", "old.pth", "--resume_force"], Path("r/m_last.pth"))
    assert command == "python finetune.py --config 'my x.yaml' --resume_force --resume r/m_last.pth"


def test_resume_command_of_the_console_script(monkeypatch):
    from tunecv.train.resume import resume_command

    monkeypatch.setattr(sys, "argv", ["/venv/bin/tunecv-finetune"])
    assert resume_command(["--lr", "0.1"], Path("m_last.pth")) == "tunecv-finetune --lr 0.1 --resume m_last.pth"
    assert resume_command([], Path("m_last.pth"), world_size=2) == \
        "torchrun --nproc_per_node 2 -m tunecv.scripts.finetune --resume m_last.pth"


def test_new_run_dirs_never_collide(tmp_path):
    from tunecv.train.resume import find_last, new_run_dir

    first = Path(new_run_dir("hub/model:v1", root=str(tmp_path)))
    first.mkdir()
    second = Path(new_run_dir("hub/model:v1", root=str(tmp_path)))
    assert first.name.startswith("hub_model_v1_") and second != first and second.parent == tmp_path
    second.mkdir()
    (first / "hub_model_v1_last.pth").write_bytes(b"")
    newest = second / "hub_model_v1_last.pth"
    newest.write_bytes(b"")
    os.utime(first / "hub_model_v1_last.pth", (1, 1))
    assert find_last("auto", None, "hub/model:v1", runs_root=str(tmp_path)) == newest


# `_last` at the end of epoch 1, the head-only phase: the resumed run starts phase 2 with a fresh optimizer
LP_FT = ("--strategy", "lp_ft", "--epoch_size", "3")
# the classifier trains on stored features, drawn in the image loader's (resumed) order
PROBE = ("--freeze", "all", "--no_aug", "--hflip", "0.5", "--lr", "0.05")


@pytest.mark.parametrize("recipe, trigger", [(LP_FT, "epoch 1:"), (PROBE, f"saved {LAST} at epoch 2 step 8")],
                         ids=["lp_ft at the phase boundary", "feature cache mid-epoch"])
def test_recipes_resume_to_the_uninterrupted_results(data_dir, tmp_path, recipe, trigger):
    whole, out = tmp_path / "whole", tmp_path / "ckpt"
    _finetune(data_dir, "--ckpt_save_dir", str(whole), "--num_parallel_workers", "0", *recipe)
    code, _ = _stop_at_epoch_2(data_dir, signal.SIGKILL, "--ckpt_save_dir", str(out), "--num_parallel_workers", "0",
                               *recipe, trigger=trigger)
    assert code == -signal.SIGKILL
    _finetune(data_dir, "--ckpt_save_dir", str(out), "--num_parallel_workers", "0", "--resume", "auto", *recipe)
    assert _columns(out / "results.txt") == _columns(whole / "results.txt")


def test_resuming_with_another_batch_size_or_epoch_order_is_refused(data_dir, tmp_path):
    out = tmp_path / "ckpt"
    code, _ = _stop_at_epoch_2(data_dir, signal.SIGKILL, "--ckpt_save_dir", str(out), "--num_parallel_workers", "0")
    assert code == -signal.SIGKILL
    before = _digest(out)
    order = "the rest of the epoch would come in another order"
    for change, said in ((("--batch_size", "8"), "batches differ: batch_size 8 (checkpoint: 4)"),
                         (("--aug_repeats", "2"), f"{order} (aug_repeats 0 -> 2)"),
                         (("--shuffle", "false"), f"{order} (shuffle True -> False)"),
                         (("--sampler", "balanced"), f"{order} (sampler 'none' -> 'balanced')")):
        proc = _finetune(data_dir, "--ckpt_save_dir", str(out), "--resume", "auto", *change, check=False)
        assert proc.returncode == 2
        assert said in proc.stderr.strip().splitlines()[-1]
        assert _digest(out) == before
    assert _finetune(data_dir, "--ckpt_save_dir", str(out), "--resume", "auto", "--aug_repeats", "1").returncode == 0


def _digest(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


def test_a_finished_run_is_left_as_it_is_and_trains_further_when_asked(data_dir, whole_run, uninterrupted,
                                                                       tmp_path):
    out = tmp_path / "ckpt"
    shutil.copytree(whole_run, out)
    before = _digest(out)
    proc = _finetune(data_dir, "--ckpt_save_dir", str(out), "--num_parallel_workers", "0", "--resume", "auto")
    assert proc.stdout.startswith(f"tunecv: the run in {out} finished at epoch 3, best top-1 ")
    assert "--epoch_size" in proc.stdout and proc.stderr == ""
    assert _digest(out) == before
    # --epoch_size 4 goes on from epoch 3's weights and schedule step, with the schedule planned over 4 epochs
    proc = _finetune(data_dir, "--ckpt_save_dir", str(out), "--num_parallel_workers", "0", "--resume", "auto",
                     "--epoch_size", "4")
    assert "extending the run from 3 to 4 epochs" in proc.stderr
    rows = _columns(out / "results.txt")
    assert rows[:4] == uninterrupted[:4] and rows[4][0] == "4"
    assert "extending the run from 3 to 4 epochs" in (out / "train.log").read_text()
