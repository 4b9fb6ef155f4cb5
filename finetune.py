"""Fine-tune an ImageNet-pretrained classifier on your images.

    python finetune.py --config configs/demo.yaml
    python finetune.py --config configs/hymenoptera.yaml --data_dir DIR --num_classes 2 --pretrained
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

from tunecv import cli
from tunecv.checkpoint import CheckpointSaver
from tunecv.config import Config, UserError, load_config, save_config, to_yaml, with_num_classes
from tunecv.data import create_dataset, create_loader, create_mixup, create_transforms, draft_size
from tunecv.data.audit import audit, write_report
from tunecv.data.datasets import check_num_classes, check_split, resolve_layout, write_bad_images
from tunecv.data.loader import class_counts
from tunecv.engine import Compute, FitResult, create_trainer, fit, optimizer_steps
from tunecv.models import apply_freeze, count_params, create_model
from tunecv.optim import create_optimizer
from tunecv.report import ResultsWriter, run_summary
from tunecv.runtime import image_mode, resolve_device, seed_everything
from tunecv.scheduler import create_scheduler
from tunecv.weights import load_initial_weights

logger = logging.getLogger("tunecv")


def run(cfg: Config) -> FitResult:
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    mode = image_mode(cfg.model.in_channels)
    cfg = replace(cfg, data=resolve_layout(cfg.data))
    out_dir = Path(cfg.train.ckpt_save_dir)
    scan_cache = out_dir / "scan_cache.json"
    train_set = create_dataset(cfg.data, cfg.data.train_split, create_transforms(cfg.data, is_training=True),
                               image_mode=mode, scan_cache=scan_cache, draft_size=draft_size(cfg.data, True))
    classes = train_set.classes
    check_num_classes(cfg.model.num_classes, classes, cfg.data.train_split)
    cfg = with_num_classes(cfg, len(classes))
    val_set = None
    if cfg.train.val_while_train:
        check_split(cfg.data, cfg.data.val_split, hint="--val_while_train false trains without validation")
        val_set = create_dataset(cfg.data, cfg.data.val_split, create_transforms(cfg.data, is_training=False),
                                 classes=classes, image_mode=mode, scan_cache=scan_cache,
                                 draft_size=draft_size(cfg.data, False))
    cli.setup_logging(out_dir / "train.log")  # only now: a run that fails on its data leaves no log behind
    if (out_dir / "results.txt").exists():
        logger.warning("%s holds an earlier run; its results and checkpoints will be replaced", out_dir)
    train_loader = create_loader(train_set, cfg.loader, is_training=True, seed=cfg.train.seed,
                                 pin_memory=device.type == "cuda")
    val_loader = create_loader(val_set, cfg.loader, is_training=False) if val_set is not None else None
    if len(train_loader) == 0:
        raise UserError(f"{len(train_set)} training images give no batch of {cfg.loader.batch_size}; "
                        "lower batch_size or set drop_remainder false")

    write_bad_images(out_dir, [train_set] + ([val_set] if val_set is not None else []))
    write_report(audit(train_set, val_set), out_dir)
    model = create_model(cfg.model, num_classes=len(classes))
    weights = load_initial_weights(model, cfg.model)
    apply_freeze(model, cfg.model.freeze)
    compute = Compute.create(device, cfg.train.amp_level, cfg.train.channels_last)
    model = compute.prepare_model(model)
    optimizer = create_optimizer(model, cfg.optim)
    steps_per_epoch = optimizer_steps(len(train_loader), cfg.train.gradient_accumulation_steps)
    scheduler = create_scheduler(optimizer, cfg.sched, lr=cfg.optim.lr, steps_per_epoch=steps_per_epoch,
                                 epochs=cfg.train.epoch_size)
    trainer = create_trainer(model, cfg.train, compute,
                             create_mixup(cfg.loader, len(classes), cfg.train.label_smoothing),
                             class_counts(train_set.targets, len(classes)))
    save_config(cfg, out_dir)
    saver = CheckpointSaver(out_dir, cfg.model.model, cfg.to_flat(), classes, keep_max=cfg.train.keep_checkpoint_max,
                            policy=cfg.train.ckpt_save_policy, interval=cfg.train.ckpt_save_interval)
    logger.info(run_summary(cfg, train_set, val_set, weights, count_params(model), optimizer, steps_per_epoch,
                            train_loader.num_workers, compute.describe()))
    return fit(model, train_loader, val_loader, optimizer, scheduler, cfg.train, saver, ResultsWriter(out_dir),
               trainer)


def main(argv: list[str] | None = None) -> int:
    parser = cli.build_parser("finetune.py", "Fine-tune an ImageNet-pretrained classifier (MindCV config keys).")
    parser.add_argument("--print_config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    try:
        args, overrides = cli.parse_args(parser, argv, script_flags=("print_config", "verbose"))
        cli.setup_logging(verbose=args.verbose)
        cfg = load_config(args.config, overrides)
        if args.print_config:
            print(to_yaml(cfg), end="")
            return 0
        result = run(cfg)
    except UserError as err:
        logger.debug("user error", exc_info=True)
        print(f"tunecv: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tunecv: interrupted", file=sys.stderr)
        return 130
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
