"""One trial: its values sampled and trained in trial_NNN, a repeat of a finished trial's values not trained
again, pruning through fit's on_epoch hook, a diverging recipe pruned, a surplus trial training nothing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from tunecv.errors import UserError  # noqa: E402
from tunecv.search.space import parse_space  # noqa: E402
from tunecv.search.trial import Objective, Surplus  # noqa: E402
from tunecv.train.engine import NonFiniteLoss  # noqa: E402


class FakeRuns:
    """A train function that reports `scores` (top1 per epoch) and records what it was asked to train."""

    def __init__(self, scores: list[float | None], error: Exception | None = None) -> None:
        self.scores, self.error, self.calls = scores, error, []

    def __call__(self, params, folder: Path, on_epoch):
        self.calls.append((dict(params), folder))
        for epoch, score in enumerate(self.scores, 1):
            on_epoch({"epoch": epoch, "top1": score})
        if self.error is not None:
            raise self.error
        known = [s for s in self.scores if s is not None]
        best = max(known) if known else None
        return SimpleNamespace(best=SimpleNamespace(value=best, epoch=self.scores.index(best) + 1 if known else 0))


def _objective(tmp_path, train, specs=("lr=log:1e-4:1e-1",), trials=5) -> Objective:
    return Objective(parse_space(list(specs)), trials, tmp_path, "top1", train)


def test_a_trial_trains_in_its_folder_and_returns_its_best_score(tmp_path):
    runs = FakeRuns([40.0, 60.0, 50.0])
    study = optuna.create_study(direction="maximize")
    study.optimize(_objective(tmp_path, runs), n_trials=2)
    first, second = study.trials
    assert first.value == 60.0 and first.state == TrialState.COMPLETE
    assert first.intermediate_values == {1: 40.0, 2: 60.0, 3: 50.0}
    assert first.user_attrs["folder"] == str(tmp_path / "trial_000") and first.user_attrs["best_epoch"] == 2
    assert first.user_attrs["pid"] > 0 and first.user_attrs["host"]
    assert [call[1].name for call in runs.calls] == ["trial_000", "trial_001"]
    assert runs.calls[0][0] == first.params and set(first.params) == {"lr"}


def test_the_values_of_a_finished_trial_are_not_trained_again(tmp_path):
    runs = FakeRuns([70.0])
    study = optuna.create_study(direction="maximize")
    study.optimize(_objective(tmp_path, runs, specs=("strategy=full",)), n_trials=3)
    assert len(runs.calls) == 1
    assert [t.value for t in study.trials] == [70.0] * 3
    assert [t.user_attrs.get("same_as") for t in study.trials] == [None, 0, 0]
    assert "folder" not in study.trials[1].user_attrs


def test_a_trial_below_the_threshold_is_pruned_between_epochs(tmp_path):
    runs = FakeRuns([10.0, 20.0, 90.0])
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=50.0))
    study.optimize(_objective(tmp_path, runs), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["pruned_epoch"] == 1
    assert trial.intermediate_values == {1: 10.0}  # the run stopped after its first epoch's row


def test_epochs_without_validation_are_not_reported(tmp_path):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=50.0))
    study.optimize(_objective(tmp_path, FakeRuns([None, 80.0])), n_trials=1)
    assert study.trials[0].intermediate_values == {2: 80.0} and study.trials[0].value == 80.0


def test_a_diverging_recipe_is_a_pruned_trial(tmp_path):
    error = NonFiniteLoss("epoch 2 step 9: the weights became nan/inf (the last checkpoint is kept); lower lr")
    study = optuna.create_study(direction="maximize")
    study.optimize(_objective(tmp_path, FakeRuns([30.0], error)), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["diverged"] == "epoch 2 step 9: the weights became nan/inf (the last checkpoint is kept)"


def test_a_run_without_a_score_stops_the_sweep(tmp_path):
    study = optuna.create_study(direction="maximize")
    with pytest.raises(UserError, match="trial 0 has no top1 to compare"):
        study.optimize(_objective(tmp_path, FakeRuns([None])), n_trials=1)
    assert study.trials[0].state == TrialState.FAIL


def test_a_trial_past_the_sweeps_count_trains_nothing(tmp_path):
    runs = FakeRuns([50.0])
    study = optuna.create_study(direction="maximize")
    study.ask()  # another worker's running trial takes the one slot
    study.optimize(_objective(tmp_path, runs, trials=1), n_trials=1, catch=(Surplus,))
    surplus = study.trials[1]
    assert surplus.state == TrialState.FAIL and surplus.user_attrs["surplus"] is True and runs.calls == []
