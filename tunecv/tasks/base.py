"""The task seam: the one interface classification (`tunecv.tasks.classification`) and detection
(`tunecv.detection.task`) each implement.

The entry scripts choose the task once (`tunecv.tasks.create_task`); the shared stages (`tunecv.resolve`, the train
loop, resume, checkpoints, the run folder) call these methods and never ask which task runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from torch import nn
from torch.utils.data import DataLoader, Dataset

from tunecv.finetune.phases import Phase, Plan
from tunecv.resolve import Resolvable, Run
from tunecv.train.engine import Trainer
from tunecv.train.loop import Pipeline, Results, Trainable
from tunecv.utils.runtime import Compute


class Task(Resolvable, Trainable, Protocol):
    """One kind of model tunecv fine-tunes: resolving its config (`Resolvable`), building its data and model,
    training an epoch and evaluating (`Trainable`), describing the run and its results."""

    name: str
    tools: frozenset[str]  # the extra steps of finetune.py it supports: lr_find, show_batch

    def create_dataset(self, run: Run, split: str) -> Dataset | None:
        """`split`: train_split, or val_split (None when the run does not validate)."""

    def create_transforms(self, run: Run, is_training: bool, compute: Compute) -> Callable | None: ...

    def create_loader(self, run: Run, dataset: Dataset | None, transform: Callable | None, is_training: bool,
                      compute: Compute) -> DataLoader | None: ...

    def create_model(self, run: Run, compute: Compute) -> tuple[nn.Module, str]:
        """The model with its configured weights on its device, and where the weights came from, in words."""

    def cache_features(self, run: Run, model: nn.Module, compute: Compute, train_set: Dataset,
                       val_set: Dataset | None, train_loader: DataLoader, val_loader: DataLoader | None
                       ) -> tuple[nn.Module, DataLoader, DataLoader | None]:
        """What batches go through, and their loaders (a classifier's head on its frozen backbone's outputs)."""

    def param_groups(self, run: Run, model: nn.Module, phase: Phase) -> list[dict[str, Any]]: ...

    def create_trainer(self, run: Run, model: nn.Module, compute: Compute, train_set: Dataset) -> Trainer: ...

    def fingerprint(self, datasets: list[Dataset | None]) -> str:
        """A digest of the data: a resumed run checks it is the same."""

    def checkpoint_meta(self, train_set: Dataset) -> dict[str, Any]: ...

    def create_results(self, run: Run) -> Results: ...

    def write_data_reports(self, run: Run, datasets: list[Dataset | None]) -> None: ...

    def describe(self, run: Run, pipeline: Pipeline, plan: Plan) -> str:
        """The block logged before training."""
