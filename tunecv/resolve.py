"""The one resolve step: a loaded `Config` → the frozen `Run` every later stage reads and none rewrites.

It owns the derived values: the run folder (or the resumed run's), the normalisation and the data layout (the
task's `resolve_config` and `resolve_data`), the class list and num_classes, the metric `_best` is chosen by, the
phases the strategy expands to, the cache decisions, and the learning rate (auto-scaled, the resumed run's, or found
by the LR range test), and what `strategy: auto` stands for (measured on the data).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from tunecv.config import Config
from tunecv.errors import UserError
from tunecv.finetune.auto import measuring_lr
from tunecv.finetune.phases import Phase
from tunecv.finetune.strategies import AUTO, strategy_keys
from tunecv.optim.optimizers import auto_scaled_lr
from tunecv.train.lr_find import START_LR
from tunecv.train.resume import find_last, training_checkpoint, with_run_dir
from tunecv.train.state import check_epochs_left, trained_epochs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """`cfg` holds the resolved keys (layout, normalisation, num_classes, ckpt_save_dir, best_metric, the lr the run
    uses) and is what config.yaml records: training from it again repeats the run. Beside it, what no key says:
    the classes, the phases (which parameters train in which epochs), whether the frozen backbone's features and
    the decoded images are cached, and the `_last` checkpoint a resumed run goes on from."""

    cfg: Config
    classes: tuple[str, ...]
    phases: tuple[Phase, ...]
    cache_features: bool = False
    cache_images: str = "none"
    checkpoint: dict[str, Any] | None = None
    resume_force: bool = False
    world_size: int = 1

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.train.ckpt_save_dir)


class Resolvable(Protocol):
    """What resolving asks of a task (`tunecv.tasks.base.Task` has it all)."""

    def resolve_config(self, cfg: Config) -> Config:
        """The values the model gives (no data is read)."""

    def resolve_data(self, cfg: Config) -> tuple[Config, list[str]]:
        """The values the data gives (its layout), and its classes."""

    def default_metric(self, cfg: Config) -> str: ...

    def plan_phases(self, cfg: Config, num_classes: int) -> list[Phase]: ...

    def resolve_caches(self, cfg: Config, phases: list[Phase], world_size: int) -> tuple[bool, str]: ...


StrategyTest = Callable[[Run, float], str]


def resolve(cfg: Config, task: Resolvable, *, world_size: int = 1, new_run: bool = True,
            range_test: Callable[[Run], float] | None = None, strategy_test: StrategyTest | None = None) -> Run:
    """The run `cfg` describes. `new_run` False (--lr_find, --show_batch): an earlier run in ckpt_save_dir is left
    alone rather than refused. `range_test`: finds the lr of `lr: auto` on a run resolved but for its lr;
    `strategy_test`: the strategy of `strategy: auto`, measured on a run resolved as strategy full (with the lr to
    fine-tune at)."""
    resume_path = find_last(cfg.train.resume, cfg.train.ckpt_save_dir, cfg.model.model) if cfg.train.resume else None
    checkpoint = training_checkpoint(resume_path) if resume_path else None
    if checkpoint is not None:
        check_epochs_left(checkpoint, cfg.train.epoch_size, resume_path)
    cfg = with_run_dir(cfg, resume_path, refuse=new_run)
    cfg, classes = task.resolve_data(task.resolve_config(cfg))
    if cfg.model.num_classes is not None and cfg.model.num_classes != len(classes):
        raise UserError(f"num_classes is {cfg.model.num_classes} but {cfg.data.train_split} has {len(classes)} "
                        f"classes; pass --num_classes {len(classes)}, or remove num_classes from the config (the data "
                        "gives it)")
    metric = task.default_metric(cfg) if cfg.train.best_metric == "auto" else cfg.train.best_metric
    resume_force = checkpoint is not None and cfg.train.resume_force
    cfg = replace(cfg, model=replace(cfg.model, num_classes=len(classes)),
                  train=replace(cfg.train, best_metric=metric, resume=None, resume_force=False, overwrite=False))
    if cfg.finetune.strategy == AUTO:
        cfg = with_strategy(cfg, resolve_strategy(Run(with_strategy(cfg, "full"), tuple(classes), (),
                                                      checkpoint=checkpoint, world_size=world_size), strategy_test))
    phases = task.plan_phases(cfg, len(classes))
    if checkpoint is not None:
        check_phases_kept(task, cfg, len(classes), phases, checkpoint)
    features, images = task.resolve_caches(cfg, phases, world_size)
    run = Run(cfg, tuple(classes), tuple(phases), features, images, checkpoint, resume_force, world_size)
    lr = resolve_lr(run, range_test)
    return replace(run, cfg=replace(cfg, optim=replace(cfg.optim, lr=lr, auto_scale_lr=None)))


def check_phases_kept(task: Resolvable, cfg: Config, num_classes: int, phases: list[Phase],
                      checkpoint: dict[str, Any]) -> None:
    """A run extended (or shortened) by a new epoch_size keeps the phases it has begun: a gradual unfreezing planned
    over more epochs would freeze other layers at the epoch it goes on from."""
    planned = checkpoint["config"].get("epoch_size")
    if planned is None or planned == cfg.train.epoch_size:
        return
    before = task.plan_phases(replace(cfg, train=replace(cfg.train, epoch_size=planned)), num_classes)
    resumed = trained_epochs(checkpoint) + 1

    def begun(plan: list[Phase]) -> list[tuple[int, frozenset[str], bool]]:
        return [(phase.start, phase.frozen, phase.restart) for phase in plan if phase.start <= resumed]

    if begun(before) != begun(phases):
        raise UserError(f"with epoch_size {cfg.train.epoch_size} instead of {planned}, this run's phases would move "
                        f"(epoch {resumed} would train other layers); keep epoch_size {planned}, or start a new run "
                        "from its weights with --ckpt_path <its _last.pth>")


def with_strategy(cfg: Config, name: str) -> Config:
    """`cfg` with strategy `name` and the keys it stands for."""
    return replace(cfg, finetune=replace(cfg.finetune, **{**strategy_keys(name), "strategy": name}))


def resolve_strategy(run: Run, strategy_test: StrategyTest | None) -> str:
    """What `strategy: auto` stands for: the resumed run's choice, or the measurements' on this data."""
    if run.checkpoint is not None:
        return run.checkpoint["config"]["strategy"]  # the measurements' answer when the run began
    if strategy_test is None:
        raise UserError("strategy: auto is measured when finetune.py trains; for this command name a strategy "
                        "(full, linear_probe, lp_ft, gradual, freeze:N)")
    cfg = run.cfg
    return strategy_test(run, measuring_lr(cfg.optim.opt) if cfg.optim.lr == "auto" else scaled_lr(run))


def scaled_lr(run: Run) -> float:
    """The number lr, scaled by auto_scale_lr for the run's global batch."""
    cfg = run.cfg
    return auto_scaled_lr(cfg.optim.lr, cfg.optim.auto_scale_lr, cfg.loader.batch_size,
                          cfg.train.gradient_accumulation_steps, run.world_size)


def resolve_lr(run: Run, range_test: Callable[[Run], float] | None) -> float:
    """The lr the run trains with: a number scaled by auto_scale_lr; `auto`: the resumed run's, or the range test's
    suggestion."""
    cfg = run.cfg
    if cfg.optim.lr != "auto":
        return scaled_lr(run)
    if run.checkpoint is not None:
        return run.checkpoint["config"]["lr"]  # the range test's answer when the run began
    if range_test is None:
        raise UserError("lr: auto needs the LR range test, which this program does not run; give lr a number")
    # a placeholder: the range test sets every group's lr itself
    lr = range_test(replace(run, cfg=replace(cfg, optim=replace(cfg.optim, lr=START_LR))))
    logger.info("lr: auto -> %.3g (LR range test)", lr)
    return lr
