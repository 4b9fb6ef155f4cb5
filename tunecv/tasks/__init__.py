"""Tasks: what tunecv fine-tunes. `create_task` is the one place a program chooses by the config's `task`; each
task implements `tunecv.tasks.base.Task`. A new task is a package of its own and one line here."""

from __future__ import annotations

import importlib

from tunecv.config import Config
from tunecv.tasks.base import Task

# task name → "module:class"; imported when chosen, so a classification run never loads the detection code
TASKS = {"classification": "tunecv.tasks.classification:Classification",
         "detection": "tunecv.detection.task:Detection"}


def create_task(cfg: Config) -> Task:
    """The task `cfg.model.task` names (the config checked the name against `tunecv.config.registries.TASKS`)."""
    module, name = TASKS[cfg.model.task].split(":")
    return getattr(importlib.import_module(module), name)()
