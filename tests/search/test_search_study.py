"""The study's bookkeeping: its storage and search space, the trials a dead process left, what counts against
--trials, and the sampler's per-trial seeds."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from optuna.distributions import CategoricalDistribution, FloatDistribution  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from tunecv.errors import UserError  # noqa: E402
from tunecv.search import study as studies  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # these tests ask, not optimize
SEARCH = {"search": {"lr": "log:0.0001:0.1", "strategy": "full,linear_probe"}, "metric": "top1"}
SPACE = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "strategy": CategoricalDistribution(["full", "linear_probe"])}


@pytest.fixture
def url(tmp_path) -> str:
    return studies.default_storage(tmp_path)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_study_keeps_its_search_space(url):
    study = studies.open_study(url, "sweep", SEARCH, seed=1, trials=4)
    assert study.user_attrs["search"] == SEARCH and study.direction.name == "MAXIMIZE"
    again = studies.open_study(url, "sweep", SEARCH, seed=1, trials=4)  # the same command joins it
    assert again.study_name == "sweep"
    other = {"search": {"lr": "log:0.001:0.1"}, "metric": "top1"}
    with pytest.raises(UserError) as caught:
        studies.open_study(url, "sweep", other, seed=1, trials=4)
    assert str(caught.value) == (
        f"study 'sweep' in {url} searches lr=log:0.0001:0.1 strategy=full,linear_probe by top1, but this command "
        "searches lr=log:0.001:0.1 by top1; give the study's --search (and best_metric), or another --study_name "
        "or ckpt_save_dir")
    assert studies.open_study(url, "other", other, seed=1, trials=4).user_attrs["search"] == other


@pytest.mark.parametrize("url, message", [
    ("nosuchdb://x", "cannot open the study storage nosuchdb://x"),
    ("postgresql://me:secret@127.0.0.1:1/db", "cannot open the study storage postgresql://me:***@127.0.0.1:1/db"),
    pytest.param("postgresql+pg8000://me:secret@127.0.0.1:1/db", "cannot open the study storage postgresql+pg8000://"
                 "me:***@127.0.0.1:1/db: its database driver pg8000 does not import (No module named 'pg8000'); pip "
                 "install \"pg8000\" on every machine", marks=pytest.mark.skipif(
                     importlib.util.find_spec("pg8000") is not None, reason="pg8000 is installed here")),
])
def test_a_storage_that_cannot_be_opened_is_one_sentence(url, message):
    with pytest.raises(UserError) as caught:
        studies.open_study(url, "sweep", SEARCH, seed=1, trials=4)
    assert str(caught.value).startswith(message) and "secret" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_trials_a_dead_process_of_this_machine_left_are_failed_and_queued_again(url):
    study = studies.open_study(url, "sweep", SEARCH, seed=1, trials=4)
    host, dead = socket.gethostname(), _dead_pid()
    # the last: a trial another worker of this host is starting (its host written, its pid not yet)
    owners = [(host, dead), (host, os.getpid()), ("elsewhere", dead), (host, None)]
    for owner_host, pid in owners:
        trial = study.ask(SPACE)
        trial.set_user_attr("host", owner_host)
        if pid is not None:
            trial.set_user_attr("pid", pid)
    assert studies.retry_dead_trials(study, host) == [0]
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING,
                                         TrialState.RUNNING, TrialState.WAITING]
    assert trials[4].user_attrs == {"retry_of": 0}
    assert study.ask(SPACE).params == trials[0].params  # the next trial takes the queued values
    assert studies.retry_dead_trials(study, host) == []  # once


def test_pid_alive():
    assert studies.pid_alive(os.getpid())
    assert not studies.pid_alive(_dead_pid())
    assert not studies.pid_alive(None) and not studies.pid_alive("12")
    if not Path("/proc/self/stat").is_file():
        return
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)
        assert not studies.pid_alive(child.pid)  # exited, not yet reaped by its parent
    finally:
        child.wait()


def test_what_counts_against_the_trials(url):
    study = studies.open_study(url, "sweep", SEARCH, seed=1, trials=4)
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        study.add_trial(optuna.trial.create_trial(state=state, params={"lr": 0.01}, distributions={
            "lr": SPACE["lr"]}, value=1.0 if state == TrialState.COMPLETE else None))
    running = study.ask(SPACE)
    surplus = study.ask(SPACE)
    surplus.set_user_attr("surplus", True)
    study.enqueue_trial({"lr": 0.02})
    trials = study.get_trials()
    assert studies.finished(trials) == 2
    assert studies.held(trials) == 4  # complete, pruned, running, waiting
    assert studies.busy(trials) == 3  # a queued trial is run by whoever asks next
    assert studies.held(trials, below=running.number) == 2
    assert studies.best_trial(trials, "top1").number == 0


def test_each_trial_draws_from_its_own_seed(url):
    def draws(seed: int, study_name: str) -> list[float]:
        study = optuna.create_study(storage=url, study_name=study_name, sampler=studies.PerTrialTPE(seed, 3))
        values = []
        for _ in range(3):
            trial = study.ask()
            values.append(trial.suggest_float("lr", 1e-4, 1e-1, log=True))
            study.tell(trial, 1.0)
        return values

    first, again, other = draws(7, "a"), draws(7, "b"), draws(8, "c")
    assert first == again and len(set(first)) == 3
    assert other[0] == first[1]  # trial 0 of seed 8 draws what trial 1 of seed 7 does


def test_startup_trials():
    assert [studies.startup_trials(n) for n in (1, 9, 12, 30, 100)] == [3, 3, 4, 10, 10]


@pytest.mark.parametrize("message, racing", [
    ('duplicate key value violates unique constraint "pg_type_typname_nsp_index"', True),
    ('relation "studies" already exists', True),
    ("Duplicate entry 'v3.0.0.a' for key 'PRIMARY'", True),
    ("Deadlock found when trying to get lock; try restarting transaction", True),
    ("database is locked", True),
    ('connection to server at "127.0.0.1", port 1 failed: Connection refused', False),
    ('password authentication failed for user "me"', False),
])
def test_workers_creating_one_study_retry_on_the_databases_racing_answers(message, racing):
    assert studies._racing(Exception(message)) is racing
