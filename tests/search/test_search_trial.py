"""One trial: its values sampled and trained in trial_NNN, a repeat of a finished trial's values not trained
again, pruning through fit's on_epoch hook (never at the last epoch), a diverging recipe pruned, refused values a
failed trial, a surplus trial training nothing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from tunecv.errors import UserError  # noqa: E402
from tunecv.search.space import parse_space  # noqa: E402
from tunecv.search.trial import REFUSED_ALONE, Objective, Refused, Surplus  # noqa: E402
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


def _objective(tmp_path, train, specs=("lr=log:1e-4:1e-1",), trials=5, epochs=None) -> Objective:
    """`epochs`: each trial's epoch count (by default, as many as the fake run reports)."""
    last = epochs or len(getattr(train, "scores", [1]))
    return Objective(parse_space(list(specs)), trials, tmp_path, "top1", train, lambda params: (1, last))


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


def test_the_last_epoch_is_never_pruned(tmp_path):
    pruner = optuna.pruners.ThresholdPruner(lower=50.0)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    study.optimize(_objective(tmp_path, FakeRuns([30.0, 10.0]), epochs=2), n_trials=1)
    assert study.trials[0].state == TrialState.PRUNED and study.trials[0].user_attrs["pruned_epoch"] == 1
    study = optuna.create_study(direction="maximize", pruner=pruner)
    study.optimize(_objective(tmp_path, FakeRuns([10.0]), epochs=1), n_trials=1)
    trial = study.trials[0]  # fully trained: a result, however poor
    assert trial.state == TrialState.COMPLETE and trial.value == 10.0 and "pruned_epoch" not in trial.user_attrs


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


def _refusing(message: str):
    """A train function that refuses values below lr 1e-2 (a combination the config rejects) and scores the rest."""
    def train(params, folder, on_epoch):
        if params["lr"] < 1e-2:
            raise UserError(message)
        on_epoch({"epoch": 1, "top1": 70.0})
        return SimpleNamespace(best=SimpleNamespace(value=70.0, epoch=1))
    return train


def test_refused_values_are_a_failed_trial_and_the_search_goes_on(tmp_path):
    message = "freeze_epochs 1 unfreezes the model after the head, but freeze: all keeps the backbone frozen"
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for lr in (1e-3, 5e-2, 2e-3, 1e-3, 3e-3):  # once a trial has trained, refusals never stop the search
        study.enqueue_trial({"lr": lr})
    study.optimize(_objective(tmp_path, _refusing(message)), n_trials=5, catch=(Refused,))
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.FAIL]
    assert study.trials[0].user_attrs["refused"] == message and "refused" not in study.trials[1].user_attrs


def test_a_search_whose_first_trials_are_all_refused_stops(tmp_path):
    study = optuna.create_study(direction="maximize")
    for lr in (1e-3, 2e-3, 3e-3):
        study.enqueue_trial({"lr": lr})
    objective = _objective(tmp_path, _refusing("strategy linear_probe sets freeze: all"))
    study.optimize(objective, n_trials=REFUSED_ALONE - 1, catch=(Refused,))
    assert [t.state for t in study.trials[:-1]] == [TrialState.FAIL] * (REFUSED_ALONE - 1)
    with pytest.raises(UserError) as refused:
        study.optimize(objective, n_trials=1, catch=(Refused,))
    assert str(refused.value) == "trial_002 (lr=0.003): strategy linear_probe sets freeze: all"


def test_a_trial_past_the_sweeps_count_trains_nothing(tmp_path):
    runs = FakeRuns([50.0])
    study = optuna.create_study(direction="maximize")
    study.ask()  # another worker's running trial takes the one slot
    study.optimize(_objective(tmp_path, runs, trials=1), n_trials=1, catch=(Surplus,))
    surplus = study.trials[1]
    assert surplus.state == TrialState.FAIL and surplus.user_attrs["surplus"] is True and runs.calls == []


def test_a_trial_is_not_pruned_before_its_layers_unfreeze_nor_at_its_last_epoch():
    from tunecv.search.trial import pruned_from

    assert pruned_from({"epoch_size": 3, "strategy": "full", "freeze_epochs": 0}) == (1, 3)
    assert pruned_from({"epoch_size": 3, "strategy": "lp_ft", "freeze_epochs": 1}) == (2, 3)  # head-only epoch 1
    assert pruned_from({"epoch_size": 6, "strategy": "gradual", "freeze_epochs": 0}) == (4, 6)
    assert pruned_from({"epoch_size": 6, "strategy": "full", "freeze_epochs": 0,
                        "unfreeze_schedule": {3: ["blocks.6"], 5: ["all"]}}) == (5, 6)
