"""One trial of a recipe search: its values sampled (or, when they repeat a finished trial's, that trial's result
reused), its run trained in <ckpt_save_dir>/trial_NNN by the function the entry script gives, and stopped between
epochs (pruned) when it trails the median of the trials before it. Values the config refuses together make a
failed trial, and the search goes on."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, Trial, TrialState

from tunecv.errors import UserError
from tunecv.finetune.strategies import AUTO
from tunecv.search.space import Param, describe
from tunecv.search.study import FINISHED, held
from tunecv.train.engine import NonFiniteLoss
from tunecv.train.loop import EpochHook, FitResult

# (the trial's values, its run folder, the hook that prunes it) → the finished run
TrainTrial = Callable[[dict[str, Any], Path, EpochHook], FitResult]
REFUSED_ALONE = 3  # refused trials, with none trained, that stop the sweep: the search space is the mistake


class Surplus(Exception):
    """A trial asked for after the sweep's --trials were all taken (workers that asked at once): it trains
    nothing and counts for nothing."""


class Refused(Exception):
    """A trial whose values the config refuses together (a combination the up-front check did not draw): a failed
    trial that counts for nothing; the search goes on."""


def suggest(trial: Trial, param: Param) -> Any:
    if param.kind == "choice":
        return trial.suggest_categorical(param.key, list(param.choices))
    if param.kind == "int":
        return trial.suggest_int(param.key, int(param.low), int(param.high), log=param.log)
    return trial.suggest_float(param.key, param.low, param.high, log=param.log)


def same_recipe(trials: list[FrozenTrial], params: dict[str, Any], number: int) -> FrozenTrial | None:
    """The first COMPLETE trial that had exactly these values (a small categorical space repeats them)."""
    return next((t for t in trials if t.number != number and t.state == TrialState.COMPLETE and t.params == params
                 and t.value is not None), None)


def pruned_from(config: dict[str, Any]) -> tuple[int, int]:
    """(the first epoch a trial may be pruned at, its last epoch + 1) from its flat config: not before its
    layers have unfrozen (an lp_ft trial's head-only epoch scores like a probe, not like the recipe), never at its
    last epoch (a trained trial is complete)."""
    epochs, schedule = config["epoch_size"], config.get("unfreeze_schedule") or {}
    first = config.get("freeze_epochs", 0) + 1
    if config.get("strategy") == "gradual":
        first = epochs // 2 + 1  # everything trains from the middle of the run
    if schedule:
        first = max(int(epoch) for epoch in schedule)
    return first, epochs


def chosen_strategy(folder: Path) -> str | None:
    """The strategy a run trains, from its config.yaml (`strategy: auto` writes its choice there); None when the
    file cannot tell (a report line is not worth a trial)."""
    try:
        return str(yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))["strategy"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def trial_folder(out_dir: Path, number: int) -> Path:
    return out_dir / f"trial_{number:03d}"


def refused_alone(trials: list[FrozenTrial], number: int) -> bool:
    """Whether trial `number`, refused, makes REFUSED_ALONE refused trials while none has finished."""
    if any(t.state in FINISHED for t in trials):
        return False
    return 1 + sum(1 for t in trials if t.number != number and "refused" in t.user_attrs) >= REFUSED_ALONE


@dataclass
class Objective:
    """What Optuna calls for each trial: the run's best `metric` (FitResult.best.value). `epochs`: the epochs a
    trial's values train (its last epoch is never pruned: the run is whole)."""

    space: dict[str, Param]
    trials: int
    out_dir: Path
    metric: str
    train: TrainTrial
    epochs: Callable[[dict[str, Any]], tuple[int, int]]  # pruned_from of the trial's values
    host: str = field(default_factory=socket.gethostname)
    current: int | None = None  # the trial this process runs now (an interrupted one is queued again)

    def __call__(self, trial: Trial) -> float:
        self.current = trial.number
        # who runs it: a trial left RUNNING by a dead process of this machine is found by its pid. The pid goes
        # first: another worker fails a trial of its host without a live pid, so it must never see the host alone
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", self.host)
        earlier = trial.study.get_trials(deepcopy=False)
        if held(earlier, below=trial.number) >= self.trials:
            trial.set_user_attr("surplus", True)
            raise Surplus(f"trial {trial.number}: the sweep's {self.trials} trials are taken")
        params = {key: suggest(trial, param) for key, param in self.space.items()}
        twin = same_recipe(earlier, params, trial.number)
        if twin is not None:  # not trained again: the same values train the same run
            trial.set_user_attr("same_as", twin.number)
            trial.set_user_attr("best_epoch", twin.user_attrs.get("best_epoch"))
            if "auto_chose" in twin.user_attrs:
                trial.set_user_attr("auto_chose", twin.user_attrs["auto_chose"])
            trial.set_user_attr("time_s", 0.0)
            return twin.value
        folder = trial_folder(self.out_dir, trial.number)
        trial.set_user_attr("folder", str(folder))
        start = time.perf_counter()
        try:
            window = self.epochs(params)
            result = self.train(params, folder, lambda row: self.report_epoch(trial, row, window))
        except NonFiniteLoss as err:  # a recipe that diverges is a poor one, not a broken sweep
            trial.set_user_attr("diverged", str(err).split(";")[0])
            raise optuna.TrialPruned(f"diverged: {err}") from None
        except UserError as err:  # values that do not go together: this recipe fails, the search goes on
            trial.set_user_attr("refused", str(err))
            if refused_alone(trial.study.get_trials(deepcopy=False), trial.number):
                raise UserError(f"{folder.name} ({describe(params)}): {err}") from None
            raise Refused(str(err)) from None
        finally:
            trial.set_user_attr("time_s", round(time.perf_counter() - start, 1))
        if result.best.value is None:
            raise UserError(f"trial {trial.number} has no {self.metric} to compare (no validation epoch); keep "
                            "val_while_train true and give a validation split")
        trial.set_user_attr("best_epoch", result.best.epoch)
        return result.best.value

    def report_epoch(self, trial: Trial, row: dict[str, Any], window: tuple[int, int]) -> None:
        """fit's on_epoch hook: the epoch's score to Optuna, and TrialPruned when the pruner says so in the
        `window` (first, last) with the last epoch left out (the run folder keeps what the run wrote)."""
        if trial.params.get("strategy") == AUTO and "auto_chose" not in trial.user_attrs:
            # what auto chose is what the trial trains (a pruned trial too): its config.yaml says it from epoch 1
            chose = chosen_strategy(Path(trial.user_attrs["folder"]))
            if chose is not None:
                trial.set_user_attr("auto_chose", chose)
        value = row.get(self.metric)
        if value is None:  # an epoch that did not validate (val_interval)
            return
        epoch = row["epoch"]
        trial.report(value, epoch)
        if window[0] <= epoch < window[1] and trial.should_prune():
            trial.set_user_attr("pruned_epoch", epoch)
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")
