"""The task seam: the one interface classification (`tunecv.tasks.classification`) and detection
(`tunecv.detection.task`) each implement.

The entry scripts choose the task once (`tunecv.tasks.create_task`); the shared stages (`tunecv.resolve`, the train
loop, resume, checkpoints, the run folder) call these methods and never ask which task runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import nn
from torch.utils.data import DataLoader, Dataset

from tunecv.config import Config
from tunecv.finetune.phases import Phase, Plan
from tunecv.resolve import Resolvable, Run
from tunecv.train.engine import Trainer
from tunecv.train.feature_memo import FeatureMemo
from tunecv.train.loop import Pipeline, Results, Trainable
from tunecv.utils.runtime import Compute


@dataclass(frozen=True)
class PredictOptions:
    """predict.py's options: a classifier's top-k and flip TTA, a detector's score threshold and drawings."""

    topk: int = 1
    tta: bool = False
    score_threshold: float = 0.5
    draw_dir: Path | None = None


class TrainedModel(Protocol):
    """What inference gets of a checkpoint (`tunecv.inference.predict.Trained`)."""

    cfg: Config
    classes: list[str]
    model: nn.Module
    compute: Compute
    temperature: float
    category_ids: list[int] | None


class Task(Resolvable, Trainable, Protocol):
    """One kind of model tunecv fine-tunes: resolving its config (`Resolvable`), building its data and model,
    training an epoch and evaluating (`Trainable`), describing the run and its results."""

    name: str
    tools: frozenset[str]  # the extra steps it supports: finetune.py --lr_find, --show_batch; export.py

    def create_dataset(self, run: Run, split: str) -> Dataset | None:
        """`split`: train_split, or val_split (None when the run does not validate)."""

    def create_transforms(self, run: Run, is_training: bool, compute: Compute) -> Callable | None: ...

    def create_loader(self, run: Run, dataset: Dataset | None, transform: Callable | None, is_training: bool,
                      compute: Compute) -> DataLoader | None: ...

    def create_model(self, run: Run, compute: Compute) -> tuple[nn.Module, str]:
        """The model with its configured weights on its device, and where the weights came from, in words."""

    def cache_features(self, run: Run, model: nn.Module, compute: Compute, train_set: Dataset,
                       val_set: Dataset | None, train_loader: DataLoader, val_loader: DataLoader | None,
                       feature_memo: FeatureMemo | None = None) -> tuple[nn.Module, DataLoader, DataLoader | None]:
        """What batches go through, and their loaders (a classifier's head on its frozen backbone's outputs);
        `feature_memo`: a recipe search's outputs kept between its trials, emptied by a run that does not use it."""

    def param_groups(self, run: Run, model: nn.Module, phase: Phase) -> list[dict[str, Any]]: ...

    def create_trainer(self, run: Run, model: nn.Module, compute: Compute, train_set: Dataset) -> Trainer: ...

    def fingerprint(self, datasets: list[Dataset | None]) -> str:
        """A digest of the data: a resumed run checks it is the same."""

    def checkpoint_meta(self, train_set: Dataset) -> dict[str, Any]: ...

    def create_results(self, run: Run) -> Results: ...

    def write_data_reports(self, run: Run, datasets: list[Dataset | None]) -> None: ...

    def describe(self, run: Run, pipeline: Pipeline, plan: Plan) -> str:
        """The block logged before training."""

    # inference: validate.py, predict.py
    def load_model(self, cfg: Config, classes: list[str], state: dict[str, Any], source: str) -> nn.Module:
        """A checkpoint's model (its `state`), on the CPU."""

    def validate(self, trained: TrainedModel, ckpt_path: str, split: str | None, output: str | None,
                 calibrate: bool, ann_file: str | None) -> list[str]:
        """Evaluate a split and write the reports; the lines validate.py prints."""

    def predict(self, trained: TrainedModel, paths: list[Path], options: PredictOptions
                ) -> tuple[list[dict[str, Any]], list[str]]:
        """(rows of predictions, the paths that did not decode)."""

    def write_predictions(self, path: str, rows: list[dict[str, Any]]) -> None: ...

    def prediction_line(self, row: dict[str, Any]) -> str: ...
