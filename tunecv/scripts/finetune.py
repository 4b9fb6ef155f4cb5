"""Fine-tune an ImageNet-pretrained classifier on your images (or, with task: detection, a COCO-trained detector).

    python finetune.py --config configs/demo.yaml
    python finetune.py --config configs/hymenoptera.yaml --data_dir DIR --num_classes 2 --pretrained
    python finetune.py --config configs/seeds/mmdet_cityscapes_maskrcnn.yaml --data_dir data/cityscapes

The pipeline, in order: load_config → create_task → resolve → create_dataset → create_transforms → create_loader →
create_model → create_optimizer / create_scheduler (per phase) → fit → `<model>_best` and results.txt.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from functools import partial

import torch

from tunecv import cli
from tunecv.config import Config, UserError, load_config, to_yaml
from tunecv.data.preview import write_batch_preview
from tunecv.finetune.phases import Phase, Plan, apply_phase, phase_schedule
from tunecv.models.names import built_as
from tunecv.optim.optimizers import create_optimizer
from tunecv.optim.schedulers import create_scheduler
from tunecv.resolve import Run, resolve
from tunecv.tasks import create_task
from tunecv.tasks.base import Task
from tunecv.train.engine import optimizer_steps
from tunecv.train.feature_memo import FeatureMemo
from tunecv.train.loop import EpochHook, FitResult, Pipeline, fit
from tunecv.train.lr_find import lr_find, report
from tunecv.train.resume import RunStopped, check_same_run, resume_command
from tunecv.train.run_folder import create_saver, open_run_folder
from tunecv.train.state import RunFinished, start_state
from tunecv.train.strategy_measure import choose_strategy
from tunecv.utils import distributed
from tunecv.utils.runtime import Compute, free_memory, resolve_device, seed_everything

logger = logging.getLogger("tunecv")


def run(cfg: Config, device: torch.device | None = None, argv: list[str] | None = None,
        on_epoch: EpochHook | None = None, *, feature_memo: FeatureMemo | None = None,
        program: str | None = None) -> FitResult:
    """A whole run: a new one, or a stopped one resumed (`resume`). `argv`: the command line, for run.json (after
    `program`, by default this process's); `on_epoch`: called with each epoch's row (`tunecv.train.loop.fit`);
    `feature_memo`: frozen-layer outputs kept between the runs of a recipe search (`tunecv.train.feature_memo`)."""
    task, resolved, pipeline, plan = prepare(cfg, device, feature_memo=feature_memo)
    saver = create_saver(task, resolved, pipeline)
    state = start_state(resolved.checkpoint, pipeline.model, pipeline.trainer, plan, saver)
    results = open_run_folder(task, resolved, pipeline, sys.argv[1:] if argv is None else argv, state.history,
                              program=program)
    logger.info(task.describe(resolved, pipeline, plan))
    return fit(task, pipeline, plan, resolved.cfg.train, saver, results, state, on_epoch)


def prepare(cfg: Config, device: torch.device | None = None, *, new_run: bool = True,
            feature_memo: FeatureMemo | None = None) -> tuple[Task, Run, Pipeline, Plan]:
    """The task chosen once, the run resolved, its data and model built, its phases planned. `new_run` False: an
    earlier run in ckpt_save_dir is no reason to stop (a benchmark, a test)."""
    device = device or resolve_device(cfg.train.device)
    task = create_task(cfg)
    resolved = resolve(cfg, task, world_size=distributed.world_size(), new_run=new_run,
                       range_test=partial(lr_range_test, task, device),
                       strategy_test=partial(choose_strategy, task, device))
    pipeline = build(task, resolved, device, feature_memo)
    steps = optimizer_steps(len(pipeline.train_loader), resolved.cfg.train.gradient_accumulation_steps)
    return task, resolved, pipeline, create_plan(task, resolved, pipeline.model, steps)


def build(task: Task, run: Run, device: torch.device, feature_memo: FeatureMemo | None = None) -> Pipeline:
    """The data and the model, in the design card's order (the optimizer comes with each phase)."""
    seed_everything(run.cfg.train.seed)
    train = run.cfg.train
    compute = Compute.create(device, train.amp_level, train.channels_last, train.compile)
    train_set = task.create_dataset(run, run.cfg.data.train_split)
    val_set = task.create_dataset(run, run.cfg.data.val_split)
    fingerprint = task.fingerprint([train_set, val_set])
    if run.checkpoint is not None:  # before anything is cached or written for a run that is not this one
        check_same_run(run.cfg, run.checkpoint, list(run.classes), fingerprint, force=run.resume_force)
    train_loader = task.create_loader(run, train_set, task.create_transforms(run, True, compute), True, compute)
    val_loader = task.create_loader(run, val_set, task.create_transforms(run, False, compute), False, compute)
    model, weights = task.create_model(run, compute)
    cli.release_console()  # the start-up checks passed (the data, the same run, the weights): their lines go out
    forward_model, train_loader, val_loader = task.cache_features(run, model, compute, train_set, val_set,
                                                                  train_loader, val_loader, feature_memo)
    trainer = task.create_trainer(run, model, compute, train_set)
    return Pipeline(model, forward_model, train_set, val_set, train_loader, val_loader, trainer, weights,
                    fingerprint)


def create_plan(task: Task, run: Run, model: torch.nn.Module, steps: int) -> Plan:
    """Each phase freezes what its freeze list names and gets an optimizer of its own over the task's parameter
    groups (per-layer lr and weight decay), with its schedule (`steps` optimizer steps an epoch)."""
    cfg = run.cfg

    def start_phase(phase: Phase) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        apply_phase(model, phase)
        optimizer = create_optimizer(task.param_groups(run, model, phase), cfg.optim, cfg.optim.lr)
        scheduler = create_scheduler(optimizer, cfg.sched, lr=cfg.optim.lr, steps_per_epoch=steps,
                                     **phase_schedule(phase, cfg.train.epoch_size, steps))
        return optimizer, scheduler

    return Plan(model, run.phases, start_phase)


def lr_range_test(task: Task, device: torch.device, probe: Run) -> float:
    """The LR range test on the first phase's trainable set; writes lr_find.png, returns the suggestion (every
    process takes the first one's: DDP replicas must step alike)."""
    pipeline = build(task, probe, device)
    optimizer, _ = create_plan(task, probe, pipeline.model, 1).start(probe.phases[0])
    result = lr_find(pipeline.forward_model, pipeline.train_loader, optimizer, pipeline.trainer,
                     probe.cfg.finetune.lr_find_steps)
    del pipeline, optimizer
    free_memory()  # the probe's model and caches, before the run builds its own
    if distributed.is_main():
        report(result, probe.out_dir / "lr_find.png")
    return distributed.broadcast(result.suggestion if distributed.is_main() else None)


def show_batch(cfg: Config, task: Task) -> str:
    """batch.png, written; the batch is the same whatever the lr and strategy: nothing measured for auto."""
    run_cfg = resolve(replace(cfg, train=replace(cfg.train, resume=None)), task, new_run=False,
                      range_test=lambda probe: probe.cfg.optim.lr, strategy_test=lambda run, lr: "full").cfg
    return str(write_batch_preview(run_cfg))


def suggest_lr(cfg: Config, task: Task, device: torch.device) -> float:
    """The LR range test's suggestion for this run (lr_find.png written)."""
    searched = replace(cfg, optim=replace(cfg.optim, lr="auto", auto_scale_lr=None),
                       train=replace(cfg.train, resume=None))
    return resolve(searched, task, world_size=distributed.world_size(), new_run=False,
                   range_test=partial(lr_range_test, task, device)).cfg.optim.lr


def _report(text: str) -> int:
    """The command's result on stdout, after the lines it logged (one process speaks for a distributed run)."""
    cli.release_console()
    if distributed.is_main():
        print(text)
    return 0


@cli.closes_quietly_on_broken_pipe
def main(argv: list[str] | None = None) -> int:
    parser = cli.build_parser("finetune.py", "Fine-tune an ImageNet-pretrained classifier (MindCV config keys).")
    parser.add_argument("--print_config", action="store_true",
                        help="print the config with the values the model and data_dir give, and exit")
    parser.add_argument("--lr_find", action="store_true",
                        help="run the LR range test, write lr_find.png in ckpt_save_dir, print the suggested lr, exit")
    parser.add_argument("--show_batch", action="store_true",
                        help="write batch.png (a training batch after augmentation, with labels) in ckpt_save_dir, "
                             "exit")
    argv, cfg = sys.argv[1:] if argv is None else argv, None
    try:
        args, overrides = cli.parse_args(parser, argv, script_flags=("print_config", "lr_find", "show_batch"))
        cli.setup_logging(args.quiet, args.verbose, hold=True)
        cfg = load_config(args.config, overrides, args.cfg_options)
        task = create_task(cfg)
        if args.print_config:  # with the values the model and data_dir give (layout, normalisation)
            mapped = built_as(cfg.model.model)  # a MindCV name: the network it stands for
            return _report((f"# model {cfg.model.model} builds {mapped}\n" if mapped else "")
                           + to_yaml(task.resolve_config(cfg)).rstrip("\n"))
        step = "show_batch" if args.show_batch else "lr_find" if args.lr_find else None
        if step is not None and step not in task.tools:
            raise UserError(f"--{step} works for classification; task: {task.name} has no such step")
        if args.show_batch:
            return _report(f"tunecv: a training batch: {show_batch(cfg, task)}")
        device = distributed.init(cfg.train.distribute, cfg.train.device) or resolve_device(cfg.train.device)
        if not distributed.is_main():  # one process speaks for the run
            for name in ("", "tunecv"):  # -v gives tunecv's logger a level of its own
                logging.getLogger(name).setLevel(logging.WARNING)
        if args.lr_find:
            return _report(f"tunecv: suggested lr {suggest_lr(cfg, task, device):.3g}")
        return _report(run(cfg, device, argv).summary())
    except RunFinished as finished:  # nothing to do is no failure: a script that resumes until done goes on
        cli.release_console(drop=True)
        return _report(f"tunecv: {finished}")
    except RunStopped as stopped:
        if distributed.is_main():
            command = resume_command(argv, stopped.last_path, distributed.world_size())
            print(f"tunecv: {stopped}\nresume with: {command}", file=sys.stderr)
        return 128 + stopped.signum
    except (UserError, RuntimeError, OSError, KeyboardInterrupt) as err:  # CUDA out of memory, a full disk: one line
        logger.debug("failure", exc_info=True)
        code = cli.failure_exit(err, batch_size=cfg.loader.batch_size if cfg else None,
                                task=cfg.model.task if cfg else "classification")
        if code is None:
            cli.release_console()  # what led to the traceback
            raise
        return code
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
