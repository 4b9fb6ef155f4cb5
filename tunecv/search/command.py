"""The sweep's command, checked before anything is written: its search space (each value, and the combinations of
values, resolved as a trial would resolve them), its data, the config every trial starts from, the metric trials
are compared by; and each trial's config and finetune.py command line (the command's flags, the trial's values as
more flags)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tunecv import cli
from tunecv.config import Config, load_config
from tunecv.config.compat import underscored
from tunecv.errors import UserError
from tunecv.finetune.phases import Phase
from tunecv.resolve import Resolvable, Run, resolve
from tunecv.search.space import Param, check_not_flags, corners, describe, parse_space
from tunecv.tasks import create_task
from tunecv.train.resume import run_files_in

MAX_CORNERS = 32  # combinations of searched values resolved up front (a larger space: a fixed sample of them)


@dataclass(frozen=True)
class Command:
    """--config, the flags that are config keys, --cfg-options."""

    config: str | None
    overrides: dict[str, Any]
    cfg_options: list[str] | None

    def load(self, values: dict[str, Any]) -> Config:
        """The command's config with `values` as more flags (a trial's, its run folder)."""
        return load_config(self.config, {**self.overrides, **values}, self.cfg_options)


def check_sweep(command: Command, specs: list[str] | None, trials: int) -> tuple[dict[str, Param], Config, str]:
    """(the space, the config every trial starts from, the metric); UserError for anything a trial would refuse:
    the data (its layout and classes), each searched value and the combinations of values (their ends for a
    range), each resolved as a trial resolves its config."""
    if not specs:
        raise UserError("sweep.py needs --search with the keys to search, e.g. --search lr=log:1e-4:1e-1 "
                        "strategy=linear_probe,full; see sweep.py --help")
    if trials < 1:
        raise UserError(f"--trials {trials} asks for no trial; give --trials 1 or more")
    space = parse_space(specs)
    check_not_flags(space, list(command.overrides))
    base = command.load({})
    _check_base(base)
    task = _DataOnce(create_task(base))
    _resolved(base, task)  # the data: a typo in data_dir is one sentence before the study is written
    for param in space.values():
        for value in param.choices or (param.low, param.high):
            try:
                _resolved(command.load({param.key: value}), task)
            except UserError as err:
                raise UserError(f"--search {param.key}={param.spec()}: {err}") from None
    if len(space) > 1:
        for values in corners(space, MAX_CORNERS):
            try:
                _resolved(command.load(values), task)
            except UserError as err:
                raise UserError(f"--search combines {describe(values)}, which a trial would refuse: {err}") from None
    train = base.train
    metric = train.best_metric if train.best_metric != "auto" else task.default_metric(base)
    return space, base, metric


def _check_base(base: Config) -> None:
    train = base.train
    if not train.ckpt_save_dir:
        raise UserError("sweep.py has no folder for its trials, sweep.db and reports; give it --ckpt_save_dir DIR "
                        "(the same DIR continues the sweep)")
    found = run_files_in(train.ckpt_save_dir)
    if found:
        raise UserError(f"--ckpt_save_dir {train.ckpt_save_dir} holds a finetune.py run ({', '.join(found[:3])}), not "
                        "a sweep; give the sweep a folder of its own")
    if train.resume:
        raise UserError("resume continues one run; a stopped sweep goes on when its command runs again: drop "
                        "--resume")
    if train.distribute:
        raise UserError("the recipe search trains each trial in one process; drop distribute, and start one sweep "
                        "process per GPU with --storage (docs/sweep.md)")
    if not train.val_while_train:
        raise UserError("the recipe search compares trials by their validation score; keep val_while_train true")


def _resolved(cfg: Config, task: Resolvable) -> Run:
    """`cfg` resolved as its trial will be, but for what only training measures (`lr: auto`, `strategy: auto`)."""
    return resolve(cfg, task, new_run=False, range_test=lambda probe: probe.cfg.optim.lr,
                   strategy_test=lambda run, lr: "full")


class _DataOnce:
    """The task, reading each data config's layout and classes once: the checked combinations share their data
    (listing a large split takes seconds)."""

    def __init__(self, task: Resolvable) -> None:
        self.task = task
        self.read: dict[str, tuple[Config, list[str]]] = {}

    def resolve_config(self, cfg: Config) -> Config:
        return self.task.resolve_config(cfg)

    def resolve_data(self, cfg: Config) -> tuple[Config, list[str]]:
        key = repr(cfg.data)
        if key not in self.read:
            self.read[key] = self.task.resolve_data(cfg)
        resolved, classes = self.read[key]
        return replace(cfg, data=resolved.data), classes

    def default_metric(self, cfg: Config) -> str:
        return self.task.default_metric(cfg)

    def plan_phases(self, cfg: Config, num_classes: int) -> list[Phase]:
        return self.task.plan_phases(cfg, num_classes)

    def resolve_caches(self, cfg: Config, phases: list[Phase], world_size: int) -> tuple[bool, str]:
        return self.task.resolve_caches(cfg, phases, world_size)


def trial_argv(argv: list[str], sweep_flags: tuple[str, ...], params: dict[str, Any], folder: Path) -> list[str]:
    """The finetune.py command line (after the program) that trains one trial again: the sweep's own, without its
    `sweep_flags` and ckpt_save_dir, the trial's values as flags, and its run folder."""
    dropped = {*sweep_flags, "ckpt_save_dir"}
    kept: list[str] = []
    skipping = False  # the values of a dropped flag (--search takes several)
    for token in argv:
        if token.startswith("-") and not cli.is_number(token):
            name, eq, _ = token.lstrip("-").partition("=")
            skipping = underscored(name) in dropped
            if skipping:
                skipping = not eq  # --trials=3 carries its value
                continue
        elif skipping:
            continue
        kept.append(token)
    values = [token for key, value in params.items() for token in (f"--{key}", flag_value(value))]
    return [*kept, *values, "--ckpt_save_dir", str(folder)]


def flag_value(value: Any) -> str:
    """A searched value as a flag gives it back exactly: true/false, none, a float's shortest exact digits."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    return repr(value) if isinstance(value, float) else str(value)
