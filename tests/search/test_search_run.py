"""A search from start to end with a stand-in for training: trials until --trials have finished, a queued retry
run first, an interruption that keeps what finished and queues the trial it stopped, the reports after each
trial, a pruned trial's model gone before the next trial, refused values, the checkpoints a finished trial keeps."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace

import pytest
from torch import nn

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from tunecv.errors import UserError  # noqa: E402
from tunecv.search import study as studies  # noqa: E402
from tunecv.search.run import Search, Stopped, drop_checkpoints, run_search  # noqa: E402
from tunecv.search.space import parse_space  # noqa: E402
from tunecv.train.engine import NonFiniteLoss  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


def _search(tmp_path, trials: int, keep_checkpoints: str = "best") -> Search:
    return Search(parse_space(["lr=log:1e-4:1e-1"]), trials, tmp_path / "sweep", "top1", seed=3,
                  study_name="sweep", storage=None, command="python sweep.py ...", keep_checkpoints=keep_checkpoints)


def _train(scores: dict[int, float], interrupt_at: int | None = None):
    calls: list[str] = []

    def train(params, folder, on_epoch):
        calls.append(folder.name)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        score = scores.get(len(calls), 50.0)
        on_epoch({"epoch": 1, "top1": score})
        return SimpleNamespace(best=SimpleNamespace(value=score, epoch=1))

    return train, calls


def _config(params):
    return {"model": "m", "epoch_size": 1, **params}


def test_trials_until_the_count_then_a_summary(tmp_path):
    train, calls = _train({2: 80.0})
    said: list[str] = []
    summary = run_search(_search(tmp_path, 3), train, _config, said.append)
    assert calls == ["trial_000", "trial_001", "trial_002"] and len(said) == 3
    assert said[1].startswith("trial 1 [2/3]: lr=") and "top-1 80.00 % (best 80.00 %, trial 1)" in said[1]
    assert summary.startswith("tunecv: 3 of 3 trials finished (3 complete, 0 pruned); best top-1 80.00 %, trial 1")
    out = tmp_path / "sweep"
    assert {p.name for p in out.iterdir()} == {"sweep.db", "sweep.csv", "sweep.png", "best.yaml"}
    # more trials asked of the same study: it goes on from trial 3
    train, calls = _train({})
    run_search(_search(tmp_path, 4), train, _config, said.append)
    assert calls == ["trial_003"]


def test_an_interrupted_sweep_keeps_what_finished_and_runs_the_stopped_trial_again(tmp_path):
    train, _ = _train({}, interrupt_at=2)
    with pytest.raises(Stopped) as caught:
        run_search(_search(tmp_path, 3), train, _config, lambda line: None)
    assert caught.value.code == 130
    assert str(caught.value) == ("tunecv: interrupted; the study keeps its 1 finished trial; trial 1 did not finish "
                                 "and runs again; continue with the same command: python sweep.py ...")
    url = studies.default_storage(tmp_path / "sweep")
    stopped = optuna.load_study(study_name="sweep", storage=url).get_trials()
    assert [t.state for t in stopped] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert "fail" in (tmp_path / "sweep" / "sweep.csv").read_text()

    train, calls = _train({})
    run_search(_search(tmp_path, 2), train, _config, lambda line: None)  # 1 finished + the queued retry = 2
    trials = optuna.load_study(study_name="sweep", storage=url).get_trials()
    assert calls == ["trial_002"] and trials[2].state == TrialState.COMPLETE
    assert trials[2].params == trials[1].params and trials[2].user_attrs["retry_of"] == 1


def test_a_pruned_trials_model_is_gone_when_the_next_trial_starts(tmp_path):
    """Optuna keeps a pruned trial's exception in a reference cycle with the frames of its run: without a collection
    between trials, the model (its GPU memory) lives on into the next trial."""
    models: list[weakref.ref] = []
    alive_at_start: list[bool] = []

    def train(params, folder, on_epoch):
        alive_at_start.append(any(ref() is not None for ref in models))
        model = nn.Linear(4, 4)
        models.append(weakref.ref(model))
        raise NonFiniteLoss("epoch 1 step 3: the weights became nan/inf; lower lr")  # pruned as diverged

    gc.disable()  # only what the search itself collects counts
    try:
        run_search(_search(tmp_path, 2), train, _config, lambda line: None)
    finally:
        gc.enable()
    assert alive_at_start == [False, False] and len(models) == 2


def test_refused_values_are_said_and_the_search_goes_on(tmp_path):
    calls = []

    def train(params, folder, on_epoch):
        calls.append(folder.name)
        if len(calls) == 2:
            raise UserError("freeze_epochs 2 unfreezes the model after the head, but freeze: all keeps it frozen")
        on_epoch({"epoch": 1, "top1": 60.0})
        return SimpleNamespace(best=SimpleNamespace(value=60.0, epoch=1))

    said: list[str] = []
    summary = run_search(_search(tmp_path, 2), train, _config, said.append)
    assert calls == ["trial_000", "trial_001", "trial_002"]
    assert said[1].startswith("trial 1 [1/2]: lr=") and said[1].endswith(
        ": refused: freeze_epochs 2 unfreezes the model after the head, but freeze: all keeps it frozen")
    assert summary.startswith("tunecv: 2 of 2 trials finished (2 complete, 0 pruned)")
    assert "fail" in (tmp_path / "sweep" / "sweep.csv").read_text()


def _checkpoints(folder):
    folder.mkdir(parents=True)
    for name in ("m_last.pth", "m_best.pth", "m_ema_best.pth", "m-1.pth", "m_best.safetensors", "m_best.json",
                 "config.yaml", "metrics.json", "run.json"):
        (folder / name).write_text("x")
    return folder


@pytest.mark.parametrize("keep, kept", [
    ("best", {"m_best.pth", "m_ema_best.pth", "m-1.pth", "m_best.safetensors", "m_best.json"}),
    ("all", {"m_last.pth", "m_best.pth", "m_ema_best.pth", "m-1.pth", "m_best.safetensors", "m_best.json"}),
    ("none", set()),
])
def test_the_checkpoints_a_finished_trial_keeps(tmp_path, keep, kept):
    folder = _checkpoints(tmp_path / "trial_000")
    drop_checkpoints(folder, keep)
    assert {p.name for p in folder.iterdir()} == {*kept, "config.yaml", "metrics.json", "run.json"}


def test_a_finished_trial_loses_its_last_checkpoint(tmp_path):
    def train(params, folder, on_epoch):
        _checkpoints(folder)
        on_epoch({"epoch": 1, "top1": 60.0})
        return SimpleNamespace(best=SimpleNamespace(value=60.0, epoch=1))

    run_search(_search(tmp_path, 1), train, _config, lambda line: None)
    folder = tmp_path / "sweep" / "trial_000"
    assert not (folder / "m_last.pth").exists() and (folder / "m_best.pth").is_file()
    run_search(_search(tmp_path / "all", 1, keep_checkpoints="all"), train, _config, lambda line: None)
    assert (tmp_path / "all" / "sweep" / "trial_000" / "m_last.pth").is_file()
