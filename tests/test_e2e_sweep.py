"""The recipe search as a user runs it: sweep.py in a subprocess on tiny images, its reports and best.yaml (which
finetune.py trains again), each trial's run.json command (which trains it again), the checkpoints a trial keeps,
a sweep killed mid-trial and run again, two workers sharing one study; and its command-line mistakes (data and
combinations of values too), each one line with nothing written."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import TINY_MODEL, write_image_folder

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from tunecv.scripts import finetune, sweep  # noqa: E402
from tunecv.search import study as studies  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # see conftest: one thread on 2 cores
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEARCH = ("--search", "lr=log:1e-4:1e-1", "strategy=linear_probe,full", "label_smoothing=0:0.2")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("sweep") / "images")


def _args(data_dir: Path, out: Path, *extra: str, trials: int = 3, epochs: int = 1) -> list[str]:
    return ["--data_dir", str(data_dir), "--model", TINY_MODEL, "--pretrained", "false", "--image_resize", "32",
            "--batch_size", "4", "--epoch_size", str(epochs), "--num_parallel_workers", "0", "--device", "cpu",
            "--no_aug", "true", "--ckpt_save_dir", str(out), *SEARCH, "--trials", str(trials), *extra]


def _command(args: list[str]) -> list[str]:
    return [sys.executable, "sweep.py", *args]


def _sweep(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(_command(args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _trials(out: Path, storage: str | None = None, study_name: str = "sweep") -> list:
    return optuna.load_study(study_name=study_name, storage=storage or studies.default_storage(out)).get_trials()


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "sweep.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_a_sweep_writes_its_trials_reports_and_a_best_config_that_trains(data_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    proc = _sweep(_args(data_dir, out))
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["trial 0 [1/3]", "trial 1 [2/3]", "trial 2 [3/3]"]
    assert "lr=" in lines[0] and "strategy=" in lines[0] and "label_smoothing=" in lines[0]
    assert lines[3].startswith("tunecv: 3 of 3 trials finished") and "rank  trial  top-1" in proc.stdout
    assert "epoch 1:" not in proc.stderr and "train 24 images" not in proc.stderr  # the trials' lines: train.log

    rows = _rows(out)
    assert [row["number"] for row in rows] == ["0", "1", "2"]
    assert list(rows[0]) == ["number", "state", "lr", "strategy", "label_smoothing", "top1", "best_epoch", "time_s",
                             "run_folder", "same_as"]
    for row in rows:
        assert row["state"] in ("complete", "pruned") and 1e-4 <= float(row["lr"]) <= 1e-1
        folder = Path(row["run_folder"])
        assert folder == out / f"trial_{int(row['number']):03d}" and (folder / "train.log").is_file()
        assert yaml.safe_load((folder / "config.yaml").read_text())["strategy"] == row["strategy"]
    assert (out / "sweep.png").read_bytes().startswith(PNG_MAGIC)

    best = yaml.safe_load((out / "best.yaml").read_text())
    best_row = max((r for r in rows if r["state"] == "complete"), key=lambda r: (float(r["top1"]), -int(r["number"])))
    assert best["ckpt_save_dir"] == str(out / "best") and best["resume"] is None
    assert best["lr"] == pytest.approx(float(best_row["lr"])) and best["strategy"] == best_row["strategy"]
    assert finetune.main(["--config", str(out / "best.yaml"), "-q"]) == 0  # the best recipe trains again
    assert (out / "best" / "results.txt").is_file()
    for folder in (out / f"trial_{n:03d}" for n in range(3)):  # a finished trial keeps its _best, not its _last
        assert [p.name for p in folder.glob("*.pth")] == [f"{TINY_MODEL}_best.pth"]

    trial = out / "trial_001"  # its run.json holds the finetune.py command that trains it again
    command = json.loads((trial / "run.json").read_text())["argv"]
    assert command[0] == "finetune.py" and "--search" not in command and "--trials" not in command
    assert command[-2:] == ["--ckpt_save_dir", str(trial)] and command.count("--ckpt_save_dir") == 1
    assert float(command[command.index("--lr") + 1]) == float(rows[1]["lr"])
    assert finetune.main([*command[1:], "--ckpt_save_dir", str(tmp_path / "again"), "-q"]) == 0
    again = yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())
    assert {**again, "ckpt_save_dir": None} == {**yaml.safe_load((trial / "config.yaml").read_text()),
                                                "ckpt_save_dir": None}
    trained = [json.loads((folder / "metrics.json").read_text())["best_top1"] for folder in (trial, tmp_path / "again")]
    assert trained[0] == trained[1]
    capsys.readouterr()

    assert sweep.main(_args(data_dir, out)) == 0  # a finished sweep run again says so
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1
    assert said[0].startswith(f"tunecv: the search in {out} is finished (3 trials, --trials 3); best top-1")


def test_a_killed_sweep_goes_on_with_the_same_command(data_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = _args(data_dir, out, epochs=2)
    worker = subprocess.Popen(_command(args), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (out / "trial_001" / "train.log").exists() and worker.poll() is None:
            assert time.monotonic() < deadline, "trial 1 never started"
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    killed = _trials(out)
    assert len(killed) == 2 and killed[0].state in studies.FINISHED and killed[1].state == TrialState.RUNNING

    assert sweep.main(args) == 0  # the same command
    said = capsys.readouterr().out
    assert "trial 1 was left running by a process that is gone; its values run again" in said
    trials = _trials(out)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == 4
    assert trials[1].state == TrialState.FAIL  # the killed trial counts for nothing
    assert studies.finished(trials) == 3 and all(t.state in studies.FINISHED for t in trials if t.number != 1)
    retried = [t for t in trials if t.user_attrs.get("retry_of") == 1]
    assert len(retried) == 1 and retried[0].params == trials[1].params and retried[0].state in studies.FINISHED
    assert [row["state"] for row in _rows(out)].count("fail") == 1
    folders = sorted(p.name for p in out.glob("trial_*"))
    assert folders == ["trial_000", "trial_001", "trial_002", "trial_003"]


# A database server's URL (postgresql://..., mysql+pymysql://...; its driver installed) runs the two workers on it
# too, as several machines would: TUNECV_TEST_STORAGE=postgresql://user:pass@localhost/db python -m pytest -k workers
SERVER = os.environ.get("TUNECV_TEST_STORAGE")


@pytest.mark.parametrize("storage", [None, pytest.param(SERVER, id="server", marks=pytest.mark.skipif(
    not SERVER, reason="TUNECV_TEST_STORAGE names no database server"))])
def test_two_workers_share_one_study(data_dir, tmp_path, storage):
    out = tmp_path / "sweep"
    study_name = f"two-workers-{time.time_ns()}" if storage else "sweep"
    args = _args(data_dir, out, *(("--storage", storage, "--study_name", study_name) if storage else ()), trials=4)
    workers = [subprocess.Popen(_command(args), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    trials = _trials(out, storage, study_name)
    finished = [t for t in trials if t.state in studies.FINISHED]
    assert len(finished) == 4 and len({t.number for t in trials}) == len(trials)
    assert {t.user_attrs["pid"] for t in finished} <= {worker.pid for worker in workers}
    lines = [line.split(" [")[0] for stdout, _ in outputs for line in stdout.splitlines() if line.startswith("trial")]
    assert sorted(lines) == sorted(f"trial {t.number}" for t in finished)  # each trained by one process
    for trial in finished:
        if "same_as" not in trial.user_attrs:
            log = (Path(trial.user_attrs["folder"]) / "train.log").read_text()
            assert log.count("tunecv run\n") == 1


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tunecv: error: "), err
    return err[0].removeprefix("tunecv: error: ")


@pytest.mark.parametrize("change, message", [
    ({"--search": ["lr=0.1:0.01"]}, "--search lr=0.1:0.01: the range's low end must be below its high end"),
    ({"--search": ["lr=log:0:1"]}, "a log-scaled range needs ends above 0"),
    ({"--search": ["lr=0.1", "lr=0.2"]}, "lr is searched twice"),
    ({"--search": ["lr="]}, "gives lr no values"),
    ({"--search": ["strategy=full,lp-fast"]}, "--search strategy=full,lp-fast: strategy 'lp-fast' is not one of"),
    ({"--search": ["label_smoothing=0:1"]}, "--search label_smoothing=0.0:1.0: label_smoothing"),
    ({"--search": ["lrr=0.1,0.2"]}, "unknown config key 'lrr' (--search); did you mean 'lr'?"),
    ({"--search": ["lr=0.1,0.2"], "--lr": ["0.3"]}, "lr is both given (--lr) and searched"),
    ({"--trials": ["0"]}, "--trials 0 asks for no trial; give --trials 1 or more"),
    ({"--ckpt_save_dir": None}, "sweep.py has no folder for its trials, sweep.db and reports; give it --ckpt_save_dir"),
    ({"--search": None}, "sweep.py needs --search with the keys to search"),
    ({"--resume": ["auto"]}, "a stopped sweep goes on when its command runs again: drop --resume"),
    ({"--data_dir": ["no/such/images"]}, "data_dir no/such/images does not exist"),
    ({"--num_classes": ["5"]}, "num_classes is 5 but"),
    ({"--search": ["strategy=linear_probe,full", "freeze_epochs=1:3"]},
     "--search combines strategy=linear_probe freeze_epochs=1, which a trial would refuse: freeze_epochs 1"),
])
def test_command_line_mistakes_are_one_line_and_write_nothing(data_dir, tmp_path, capsys, change, message):
    out = tmp_path / "sweep"
    args = {"--data_dir": [str(data_dir)], "--model": [TINY_MODEL], "--ckpt_save_dir": [str(out)],
            "--search": ["lr=log:1e-4:1e-1"], "--trials": ["2"], **change}
    argv = [token for flag, values in args.items() if values is not None for token in (flag, *values)]
    assert sweep.main(argv) == 2
    assert message in _one_error_line(capsys)
    assert not out.exists()


def test_a_worker_with_another_search_space_is_refused(data_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    studies.open_study(studies.default_storage(out), "sweep", {"search": {"lr": "log:0.0001:0.1"}, "metric": "top1"},
                       seed=1, trials=2)
    argv = ["--data_dir", str(data_dir), "--model", TINY_MODEL, "--ckpt_save_dir", str(out), "--search",
            "lr=log:1e-3:1e-1"]
    assert sweep.main(argv) == 2
    assert "study 'sweep' in sqlite:///" in _one_error_line(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["sweep.db"]


def test_without_optuna_the_sweep_says_how_to_install_it(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna fails
    out = tmp_path / "sweep"
    assert sweep.main(["--data_dir", str(data_dir), "--ckpt_save_dir", str(out), "--search", "lr=0.1,0.2"]) == 2
    assert _one_error_line(capsys) == 'the recipe search needs Optuna; pip install "tunecv[sweep]" (or pip install ' \
                                      '-r requirements-sweep.txt)'
    assert not out.exists()


def test_a_searched_auto_records_what_it_chose(data_dir, tmp_path):
    out = tmp_path / "auto"
    args = _args(data_dir, out, trials=2)
    at = args.index("--search")
    args[at + 1:at + 4] = ["strategy=auto", "lr=log:1e-3:1e-2"]
    proc = _sweep(args)
    rows = _rows(out)
    assert [row["strategy"] for row in rows] == ["auto", "auto"]
    for row in rows:
        chosen = yaml.safe_load((Path(row["run_folder"]) / "config.yaml").read_text())["strategy"]
        assert chosen != "auto" and row["auto_chose"] == chosen
        assert f"trial {row['number']} [" in proc.stdout and f"(auto chose {chosen}):" in proc.stdout
    assert yaml.safe_load((out / "best.yaml").read_text())["strategy"] in {row["auto_chose"] for row in rows}
