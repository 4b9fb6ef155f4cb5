"""Fine-tune an ImageNet-pretrained classifier on your images (or, with task: detection, a COCO-trained detector).

    python finetune.py --config configs/demo.yaml
    python finetune.py --config configs/hymenoptera.yaml --data_dir DIR --num_classes 2 --pretrained
    python finetune.py --config configs/seeds/mmdet_cityscapes_maskrcnn.yaml --data_dir data/cityscapes
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn
from torch.utils.data import DataLoader, Dataset

from tunecv import cli
from tunecv.config import Config, UserError, load_config, save_config, to_yaml, with_num_classes
from tunecv.data import create_dataset, create_loader, create_mixup, create_transforms, draft_size
from tunecv.data.audit import audit, write_report
from tunecv.data.datasets import check_num_classes, check_split, resolve_layout, write_bad_images
from tunecv.data.image_cache import attach_image_cache
from tunecv.data.loader import class_counts
from tunecv.data.prefetch import on_device
from tunecv.data.preview import write_batch_preview
from tunecv.finetune.phases import Plan
from tunecv.finetune.strategies import apply_phase
from tunecv.models.factory import count_params, create_model
from tunecv.models.weights import load_initial_weights
from tunecv.optim.optimizers import auto_scaled_lr
from tunecv.report.manifest import data_fingerprint, write_run_manifest
from tunecv.report.results import ResultsWriter, run_summary
from tunecv.train import resume
from tunecv.train.checkpoint import CheckpointSaver
from tunecv.train.engine import Compute, Trainer, create_trainer, optimizer_steps
from tunecv.train.feature_cache import create_feature_loaders, use_feature_cache
from tunecv.train.loop import FitResult, fit
from tunecv.train.lr_find import START_LR, lr_find, plot
from tunecv.train.resume import RunStopped
from tunecv.utils import distributed
from tunecv.utils.runtime import image_mode, resolve_device, seed_everything

logger = logging.getLogger("tunecv")


@dataclass
class Setup:
    """Everything a run needs, built from the config: data, model, trainer and the plan of its phases."""

    cfg: Config
    out_dir: Path
    train_set: Dataset
    val_set: Dataset | None
    train_loader: DataLoader
    val_loader: DataLoader | None
    model: nn.Module
    forward_model: nn.Module  # what batches go through: the model, or its trained part on stored features
    weights: str
    compute: Compute
    trainer: Trainer
    plan: Plan


def prepare(cfg: Config, device=None) -> Setup:
    """`device`: this process's GPU in a distributed run (`distributed.init`)."""
    seed_everything(cfg.train.seed)
    device = device or resolve_device(cfg.train.device)
    cfg = replace(cfg, data=resolve_layout(cfg.data))
    out_dir = Path(cfg.train.ckpt_save_dir)
    train_set, val_set = _datasets(cfg, out_dir, uint8=device.type == "cuda")
    classes = train_set.classes
    check_num_classes(cfg.model.num_classes, classes, cfg.data.train_split)
    cfg = with_num_classes(cfg, len(classes))
    if distributed.is_main():  # only now: a run that fails on its data leaves no log behind
        cli.add_log_file(out_dir / "train.log")
    compute = Compute.create(device, cfg.train.amp_level, cfg.train.channels_last, cfg.train.compile)
    shard = {"rank": distributed.rank(), "world_size": distributed.world_size()}
    train_loader = on_device(create_loader(train_set, cfg.loader, is_training=True, seed=cfg.train.seed,
                                           pin_memory=device.type == "cuda", **shard),
                             compute, cfg.data, is_training=True)
    val_loader = on_device(create_loader(val_set, cfg.loader, is_training=False, pin_memory=device.type == "cuda",
                                         **shard), compute, cfg.data, is_training=False) \
        if val_set is not None else None
    if len(train_loader) == 0:
        raise UserError(f"{len(train_set)} training images give no batch of {cfg.loader.batch_size}; "
                        "lower batch_size or set drop_remainder false")
    model = create_model(cfg.model, num_classes=len(classes))
    weights = load_initial_weights(model, cfg.model)
    model = compute.prepare_model(distributed.sync_batchnorm(model, cfg.train.sync_bn, device))
    steps_per_epoch = optimizer_steps(len(train_loader), cfg.train.gradient_accumulation_steps)
    lr = cfg.optim.lr if cfg.optim.lr == "auto" else auto_scaled_lr(
        cfg.optim.lr, cfg.optim.auto_scale_lr, cfg.loader.batch_size, cfg.train.gradient_accumulation_steps,
        distributed.world_size())
    plan = Plan.create(model, cfg, lr, steps_per_epoch)
    features = use_feature_cache(cfg, model, plan)
    _cache_images(cfg, out_dir, train_set, val_set, features)  # before the feature pass: its views read them
    forward_model = model
    if features:
        apply_phase(model, plan.phases[0])
        cached = create_feature_loaders(model, compute, cfg, train_set, val_set, train_loader, val_loader)
        if cached is not None:
            forward_model, train_loader, val_loader = cached
    trainer = create_trainer(model, cfg.train, compute,
                             create_mixup(cfg.loader, len(classes), cfg.train.label_smoothing),
                             class_counts(train_set.targets, len(classes)), freeze_bn=cfg.finetune.freeze_bn)
    return Setup(cfg, out_dir, train_set, val_set, train_loader, val_loader, model, forward_model, weights, compute,
                 trainer, plan)


def _datasets(cfg: Config, out_dir: Path, uint8: bool) -> tuple[Dataset, Dataset | None]:
    """The training and validation sets (uint8 images for the GPU prefetcher to normalise)."""
    mode = image_mode(cfg.model.in_channels)
    scan_cache = out_dir / "scan_cache.json"
    train_set = create_dataset(cfg.data, cfg.data.train_split, create_transforms(cfg.data, True, uint8=uint8),
                               image_mode=mode, scan_cache=scan_cache, draft_size=draft_size(cfg.data, True))
    if not cfg.train.val_while_train:
        return train_set, None
    check_split(cfg.data, cfg.data.val_split, hint="--val_while_train false trains without validation")
    val_set = create_dataset(cfg.data, cfg.data.val_split, create_transforms(cfg.data, False, uint8=uint8),
                             classes=train_set.classes, image_mode=mode, scan_cache=scan_cache,
                             draft_size=draft_size(cfg.data, False))
    return train_set, val_set


def _cache_images(cfg: Config, out_dir: Path, train_set: Dataset, val_set: Dataset | None, features: bool) -> None:
    # images read once or twice for their features gain nothing from a pixel cache, unless it is asked for
    requested = "none" if features and cfg.data.cache_images == "auto" else cfg.data.cache_images
    if distributed.enabled() and requested == "auto":
        logger.info("image cache: off in a distributed run (cache_images: ram or disk asks for it)")
        requested = "none"
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else out_dir / "cache"
    builds_first = distributed.is_main()  # one disk cache for all processes: the first builds, the others read
    if not builds_first:
        distributed.barrier()
    for dataset, split, training in ((train_set, "train", True), (val_set, "val", False)):
        if dataset is not None:
            attach_image_cache(dataset, dataset.transform, requested, cache_dir, split,
                               draft_size(cfg.data, training), cfg.data.cache_ram_gb)
    if builds_first:
        distributed.barrier()


def find_lr(setup: Setup) -> float:
    """The LR range test on the first phase's trainable set; writes lr_find.png, returns the suggestion."""
    if setup.plan.lr == "auto":
        setup.plan.lr = START_LR  # a placeholder: the range test sets every group's lr itself
    optimizer, _ = setup.plan.start(setup.plan.phases[0])
    result = lr_find(setup.forward_model, setup.train_loader, optimizer, setup.trainer,
                     setup.cfg.finetune.lr_find_steps)
    setup.plan.reset()
    if not distributed.is_main():  # every process takes the first one's lr: DDP replicas must step alike
        return distributed.broadcast(None)
    path = plot(result, setup.out_dir / "lr_find.png")
    distributed.broadcast(result.suggestion)
    logger.info("lr_find: %d steps from %.1e to %.1e; suggested lr %.3g (plot: %s)", len(result.lrs), result.lrs[0],
                result.lrs[-1], result.suggestion, path)
    return result.suggestion


def run(cfg: Config, device=None, argv: list[str] | None = None) -> FitResult:
    """A whole run: a new one, or a stopped one resumed (`resume`). `device`: see `prepare`; `argv`: the command
    line, for run.json."""
    argv = sys.argv[1:] if argv is None else argv
    resume_path = resume.find_last(cfg.train.resume, cfg.train.ckpt_save_dir, cfg.model.model) \
        if cfg.train.resume else None
    checkpoint = resume.training_checkpoint(resume_path) if resume_path else None
    cfg = resume.with_run_dir(cfg, resume_path)
    setup = prepare(cfg, device)
    cfg, out_dir, plan = setup.cfg, setup.out_dir, setup.plan
    fingerprint = data_fingerprint([setup.train_set, setup.val_set])
    if checkpoint is not None:
        resume.check_same_run(cfg, checkpoint, setup.train_set.classes, fingerprint)
    if checkpoint is not None and plan.lr == "auto":
        plan.lr = checkpoint["config"]["lr"]  # the range test's answer when the run began
    elif plan.lr == "auto":
        plan.lr = find_lr(setup)
        logger.info("lr: auto -> %.3g (LR range test)", plan.lr)
    # config.yaml records the lr the run used, so training from it again repeats this run (a new run, not a resume)
    cfg = replace(cfg, optim=replace(cfg.optim, lr=plan.lr, auto_scale_lr=None),
                  train=replace(cfg.train, resume=None, resume_force=False, overwrite=False))
    main_process = distributed.is_main()
    if main_process:
        sets = [setup.train_set] + ([setup.val_set] if setup.val_set is not None else [])
        write_bad_images(out_dir, sets)
        write_report(audit(setup.train_set, setup.val_set), out_dir)
        save_config(cfg, out_dir)
        write_run_manifest(out_dir, cfg, setup.train_set.classes, fingerprint, [sys.argv[0], *argv],
                           world_size=distributed.world_size())
    saver = CheckpointSaver(out_dir, cfg.model.model, cfg.to_flat(), setup.train_set.classes,
                            keep_max=cfg.train.keep_checkpoint_max, policy=cfg.train.ckpt_save_policy,
                            interval=cfg.train.ckpt_save_interval, save_format=cfg.train.save_format,
                            meta={"data_fingerprint": fingerprint})
    optimizer, _ = plan.enter(1)
    logger.info(run_summary(cfg, setup.train_set, setup.val_set, setup.weights, count_params(setup.model),
                            type(optimizer).__name__, plan, setup.plan.steps_per_epoch,
                            setup.train_loader.num_workers, _compute(setup), _caches(setup)))
    results = ResultsWriter(out_dir, ema=cfg.train.ema, csv=cfg.train.log_csv,
                            tensorboard=cfg.train.log_tensorboard) if main_process else None
    return fit(setup.forward_model, setup.train_loader, setup.val_loader, plan, cfg.train, saver, results,
               setup.trainer, saved_model=setup.model, resume=checkpoint)


def _compute(setup: Setup) -> str:
    world = distributed.world_size()
    if world == 1:
        return setup.compute.describe()
    batch = setup.cfg.loader.batch_size
    return f"{setup.compute.describe()}; {world} processes x batch {batch} = global batch {world * batch}"


def _caches(setup: Setup) -> str:
    """What is computed once and kept: decoded images, the frozen backbone's outputs."""
    parts = [f"{name} images {cache.storage} ({cache.nbytes / 1e6:.0f} MB)" for name, dataset in
             (("train", setup.train_set), ("val", setup.val_set))
             if (cache := getattr(dataset, "image_cache", None)) is not None]
    if setup.forward_model is not setup.model:
        views = setup.train_loader.num_views
        parts.append(f"features of the frozen backbone ({views} view{'s' if views > 1 else ''} per training image)")
    return "; ".join(parts) or "none"


@cli.closes_quietly_on_broken_pipe
def main(argv: list[str] | None = None) -> int:
    parser = cli.build_parser("finetune.py", "Fine-tune an ImageNet-pretrained classifier (MindCV config keys).")
    parser.add_argument("--print_config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--lr_find", action="store_true",
                        help="run the LR range test, write lr_find.png in ckpt_save_dir, print the suggested lr, exit")
    parser.add_argument("--show_batch", action="store_true",
                        help="write batch.png (a training batch after augmentation, with labels) in ckpt_save_dir, "
                             "exit")
    cfg = None
    try:
        args, overrides = cli.parse_args(parser, argv, script_flags=("print_config", "lr_find", "show_batch"))
        cli.setup_logging(args.quiet, args.verbose)
        cfg = load_config(args.config, overrides, args.cfg_options)
        if args.print_config:
            print(to_yaml(cfg), end="")
            return 0
        if cfg.model.task == "detection" and (args.show_batch or args.lr_find):
            raise UserError(f"--{'show_batch' if args.show_batch else 'lr_find'} works for classification; "
                            "task: detection has no such step")
        if args.show_batch:
            print(f"tunecv: a training batch: {write_batch_preview(resume.with_run_dir(cfg, None, refuse=False))}")
            return 0
        device = distributed.init(cfg.train.distribute, cfg.train.device)
        if not distributed.is_main():  # one process speaks for the run
            logging.getLogger().setLevel(logging.WARNING)
        if args.lr_find:
            suggestion = find_lr(prepare(resume.with_run_dir(cfg, None, refuse=False), device))
            if distributed.is_main():
                print(f"tunecv: suggested lr {suggestion:.3g}")
            return 0
        if cfg.model.task == "detection":
            from tunecv.detection.run import run_detection  # here: a classification run's start-up skips it

            result = run_detection(cfg, device, argv)
        else:
            result = run(cfg, device, argv)
        if distributed.is_main():
            print(result.summary())
        return 0
    except UserError as err:
        logger.debug("user error", exc_info=True)
        cli.failure_exit(err)
        return 2
    except RunStopped as stopped:
        if distributed.is_main():
            command = resume.resume_command(argv, stopped.last_path, distributed.world_size())
            print(f"tunecv: {stopped}\nresume with: {command}", file=sys.stderr)
        return 128 + stopped.signum
    except (RuntimeError, OSError) as err:  # CUDA out of memory, a full disk: a traceback would not help
        logger.debug("run-time failure", exc_info=True)
        code = cli.failure_exit(err, batch_size=cfg.loader.batch_size if cfg is not None else None,
                                detection=cfg is not None and cfg.model.task == "detection")
        if code is None:
            raise
        return code
    except KeyboardInterrupt:
        print("tunecv: interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
