"""The sweep's command, checked before anything is written: its search space, the config every trial starts
from, the metric trials are compared by; and each trial's config (the command's flags, the trial's values as
more flags)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunecv.config import Config, load_config
from tunecv.errors import UserError
from tunecv.search.space import Param, check_not_flags, parse_space
from tunecv.tasks import create_task


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
    """(the space, the config every trial starts from, the metric); UserError for anything a trial would refuse,
    each searched value put through the rules a flag meets."""
    if not specs:
        raise UserError("sweep.py needs --search with the keys to search, e.g. --search lr=log:1e-4:1e-1 "
                        "strategy=linear_probe,full; see sweep.py --help")
    if trials < 1:
        raise UserError(f"--trials {trials} asks for no trial; give --trials 1 or more")
    space = parse_space(specs)
    check_not_flags(space, list(command.overrides))
    base = command.load({})
    train = base.train
    if not train.ckpt_save_dir:
        raise UserError("sweep.py needs --ckpt_save_dir DIR: its trials, sweep.db and reports go there (the same "
                        "DIR continues the sweep)")
    if train.resume:
        raise UserError("resume continues one run; a stopped sweep goes on when its command runs again: drop "
                        "--resume")
    if train.distribute:
        raise UserError("the recipe search trains each trial in one process; drop distribute, and start one sweep "
                        "process per GPU with --storage (docs/sweep.md)")
    if not train.val_while_train:
        raise UserError("the recipe search compares trials by their validation score; keep val_while_train true")
    for param in space.values():
        for value in param.choices or (param.low, param.high):
            try:
                command.load({param.key: value})
            except UserError as err:
                raise UserError(f"--search {param.key}={param.spec()}: {err}") from None
    metric = train.best_metric if train.best_metric != "auto" else create_task(base).default_metric(base)
    return space, base, metric
