"""A search from start to end with a stand-in for training: trials until --trials have finished, a queued retry
run first, an interruption that keeps what finished and queues the trial it stopped, the reports after each
trial."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from tunecv.search import study as studies  # noqa: E402
from tunecv.search.run import Search, Stopped, run_search  # noqa: E402
from tunecv.search.space import parse_space  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


def _search(tmp_path, trials: int) -> Search:
    return Search(parse_space(["lr=log:1e-4:1e-1"]), trials, tmp_path / "sweep", "top1", seed=3,
                  study_name="sweep", storage=None, command="python sweep.py ...")


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
    return {"model": "m", **params}


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
