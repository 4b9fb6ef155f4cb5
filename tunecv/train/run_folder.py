"""The run folder every task shares: train.log, config.yaml (the resolved config: training from it again repeats
the run), run.json and classes.json, the task's data reports, the checkpoint saver and the results writer.

Nothing is written in it before every check has passed (`create_saver` and `start_state` write nothing): a command
that fails leaves the folder as it found it."""

from __future__ import annotations

import sys
from typing import Any

from tunecv import cli
from tunecv.config import save_config
from tunecv.report.manifest import write_run_manifest
from tunecv.resolve import Run
from tunecv.tasks.base import Task
from tunecv.train.checkpoint import CheckpointSaver
from tunecv.train.loop import Pipeline, Results
from tunecv.utils import distributed


def create_saver(task: Task, run: Run, pipeline: Pipeline) -> CheckpointSaver:
    """What writes the run's checkpoints (nothing yet)."""
    train = run.cfg.train
    return CheckpointSaver(run.out_dir, run.cfg.model.model, run.cfg.to_flat(), list(run.classes),
                           keep_max=train.keep_checkpoint_max, policy=train.ckpt_save_policy,
                           interval=train.ckpt_save_interval, save_format=train.save_format,
                           meta={"data_fingerprint": pipeline.fingerprint, **task.checkpoint_meta(pipeline.train_set)},
                           score_key=train.best_metric)


def open_run_folder(task: Task, run: Run, pipeline: Pipeline, argv: list[str],
                    history: list[dict[str, Any]], program: str | None = None) -> Results | None:
    """The run's first writes: train.log (with the lines logged so far), its records, and the results writer with
    a resumed run's rows (`history`) written again (None on every process but the first). `program`: run.json's
    first word, when the command that reruns the run is not this process's (a recipe search's trial)."""
    if not distributed.is_main():
        return None
    cli.add_log_file(run.out_dir / "train.log")
    datasets = [pipeline.train_set, pipeline.val_set]
    task.write_data_reports(run, datasets)
    save_config(run.cfg, run.out_dir)
    write_run_manifest(run.out_dir, run.cfg, list(run.classes), pipeline.fingerprint, [program or sys.argv[0], *argv],
                       world_size=run.world_size)
    results = task.create_results(run)
    for row in history:
        results.add(row, replayed=True)
    return results
