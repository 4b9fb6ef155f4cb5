"""Other training tools' names for tunecv's keys, for the unknown-key error: `'learning_rate' is called 'lr' here`.

They are suggested, not accepted: most differ from ours in unit or type (timm's `warmup_lr` is an lr, ours a
factor; Hugging Face's `fp16` is a switch, ours an AMP level), and a name read silently as another key hides that.
The names compat.RENAMED_KEYS already accepts (`epochs`, `class_num`, `load_from`) are not repeated here, and a
hyphen is an underscore everywhere (`--batch-size`), so only underscored spellings are listed.
"""

from __future__ import annotations

from collections.abc import Iterable

from tunecv.config.values import closest_names

TIMM, HF, TV = "timm's train.py", "Hugging Face's Trainer", "torchvision's reference scripts"
MMPRE, PADDLE = "MMPretrain", "PaddleClas"
HF_EXAMPLES = "Hugging Face's image-classification example"

# foreign name: (tunecv key, the tools that use the name, what to mind when moving the value; "" when nothing)
FOREIGN_NAMES: dict[str, tuple[str, str, str]] = {
    # data
    "data": ("data_dir", TIMM, ""),
    "data_path": ("data_dir", TV, ""),
    "data_root": ("data_dir", MMPRE, ""),
    "train_dir": ("data_dir", HF_EXAMPLES, "give the folder that holds the train_split and val_split folders"),
    "validation_dir": ("data_dir", HF_EXAMPLES, "give the folder that holds the train_split and val_split folders"),
    "img_size": ("image_resize", TIMM, ""),
    "input_size": ("image_resize", TIMM, "give one side in pixels, not channels, height, width"),
    "image_size": ("image_resize", HF, ""),
    "train_crop_size": ("image_resize", TV, "it is also the evaluation size"),
    "val_crop_size": ("image_resize", TV, "it is also the training size"),
    "crop_size": ("image_resize", MMPRE, ""),
    "image_shape": ("image_resize", PADDLE, "give one side in pixels, not channels, height, width"),
    "train_interpolation": ("interpolation", TIMM, ""),
    "aa": ("auto_augment", TIMM, ""),
    "reprob": ("re_prob", TIMM, ""),
    "random_erase": ("re_prob", TV, ""),
    "in_chans": ("in_channels", TIMM, ""),
    # loader
    "workers": ("num_parallel_workers", f"{TIMM}, {TV}", ""),
    "num_workers": ("num_parallel_workers", f"{MMPRE}, {PADDLE}", ""),
    "dataloader_num_workers": ("num_parallel_workers", HF, ""),
    "per_device_train_batch_size": ("batch_size", HF, ""),
    "train_batch_size": ("batch_size", HF, ""),
    "dataloader_drop_last": ("drop_remainder", HF, ""),
    "mixup_alpha": ("mixup", TV, ""),
    "cutmix_alpha": ("cutmix", TV, ""),
    "mixup_prob": ("cutmix_prob", TIMM, ""),
    # model
    "model_name_or_path": ("model", HF_EXAMPLES, "give a timm model name"),
    "drop": ("drop_rate", TIMM, ""),
    "drop_path": ("drop_path_rate", TIMM, ""),
    "initial_checkpoint": ("ckpt_path", TIMM, ""),
    "pretrained_model": ("ckpt_path", PADDLE, ""),
    "weights": ("pretrained", TV, "set it true for ImageNet weights, or give a local file as ckpt_path"),
    # optimizer
    "learning_rate": ("lr", f"{HF}, {PADDLE}", ""),
    "wd": ("weight_decay", TV, ""),
    "optim": ("opt", HF, ""),
    "optimizer": ("opt", f"{MMPRE}, {PADDLE}", "give the optimizer's name"),
    "opt_eps": ("eps", TIMM, ""),
    "adam_epsilon": ("eps", HF, ""),
    "max_grad_norm": ("clip_value", HF, "set clip_grad: true with it"),
    "clip_grad_norm": ("clip_value", TV, "set clip_grad: true with it"),
    # schedule
    "sched": ("scheduler", TIMM, ""),
    "lr_scheduler_type": ("scheduler", HF, ""),
    "lr_scheduler": ("scheduler", TV, ""),
    "warmup_lr": ("warmup_factor", TIMM, "give a multiple of lr, not an lr"),
    "warmup_start_lr": ("warmup_factor", PADDLE, "give a multiple of lr, not an lr"),
    "lr_warmup_decay": ("warmup_factor", TV, ""),
    "lr_warmup_epochs": ("warmup_epochs", TV, ""),
    "warmup_epoch": ("warmup_epochs", PADDLE, ""),
    "warmup_steps": ("warmup_iters", HF, ""),
    "lr_min": ("min_lr", TV, ""),
    "eta_min": ("min_lr", f"{MMPRE}, {PADDLE}", ""),
    "lr_step_size": ("decay_epochs", TV, ""),
    "lr_gamma": ("decay_rate", TV, ""),
    "gamma": ("decay_rate", f"{MMPRE}, {PADDLE}", ""),
    "lr_cycle_decay": ("cycle_decay", TIMM, ""),
    "lr_cycle_limit": ("num_cycles", TIMM, ""),
    # training
    "num_train_epochs": ("epoch_size", HF, ""),
    "max_epochs": ("epoch_size", MMPRE, ""),
    "smoothing": ("label_smoothing", TIMM, ""),
    "label_smoothing_factor": ("label_smoothing", HF, ""),
    "label_smooth_val": ("label_smoothing", MMPRE, ""),
    "bce_loss": ("loss", TIMM, "set loss: bce"),
    "model_ema": ("ema", f"{TIMM}, {TV}", ""),
    "model_ema_decay": ("ema_decay", f"{TIMM}, {TV}", ""),
    "amp": ("amp_level", f"{TIMM}, {TV}", "set O1, O2 or O3 for mixed precision"),
    "fp16": ("amp_level", HF, "set O1, O2 or O3 for mixed precision"),
    "bf16": ("amp_level", HF, "set O1, O2 or O3 for mixed precision"),
    "use_amp": ("amp_level", PADDLE, "set O1, O2 or O3 for mixed precision"),
    "output": ("ckpt_save_dir", TIMM, "give the run's own folder, not the one above it"),
    "output_dir": ("ckpt_save_dir", f"{HF}, {TV}, {PADDLE}", ""),
    "work_dir": ("ckpt_save_dir", MMPRE, ""),
    "overwrite_output_dir": ("overwrite", HF, ""),
    "resume_from_checkpoint": ("resume", HF, ""),
    "checkpoints": ("resume", PADDLE, ""),
    "checkpoint_hist": ("keep_checkpoint_max", TIMM, ""),
    "save_total_limit": ("keep_checkpoint_max", HF, ""),
    "max_keep_ckpts": ("keep_checkpoint_max", MMPRE, ""),
    "save_steps": ("ckpt_save_steps", HF, ""),
    "save_interval": ("ckpt_save_interval", PADDLE, ""),
    "eval_metric": ("best_metric", TIMM, ""),
    "metric_for_best_model": ("best_metric", HF, ""),
    "print_freq": ("log_interval", TV, ""),
    "logging_steps": ("log_interval", HF, ""),
    "print_batch_step": ("log_interval", PADDLE, ""),
    "eval_interval": ("val_interval", PADDLE, ""),
    "eval_during_train": ("val_while_train", PADDLE, ""),
    "grad_accum_steps": ("gradient_accumulation_steps", TIMM, ""),
    "accumulative_counts": ("gradient_accumulation_steps", MMPRE, ""),
    "torchcompile": ("compile", TIMM, ""),
    "torch_compile": ("compile", HF, ""),
    "use_visualdl": ("log_tensorboard", PADDLE, ""),
    "use_cpu": ("device", HF, "set device: cpu"),
    "no_cuda": ("device", HF, "set device: cpu"),
}


def unknown_key_hint(key: str, known: Iterable[str], renamed: dict[str, str]) -> str:
    """What follows `unknown config key 'x' (where)`: another tool's name with ours first, else the closest of
    ours; a close name of another tool (`renamed`: the ones tunecv accepts too) counts as the key it stands for."""
    if key in FOREIGN_NAMES:
        ours, tools, differs = FOREIGN_NAMES[key]
        users = " and ".join(tools.rsplit(", ", 1))
        return f"; {key!r} is called {ours!r} here (the name in {users})" + (f": {differs}" if differs else "")
    stands_for = {**{name: entry[0] for name, entry in FOREIGN_NAMES.items()}, **renamed}
    matches = closest_names(key, [*known, *stands_for])
    ours = list(dict.fromkeys(stands_for.get(match, match) for match in matches))
    return f"; did you mean {' or '.join(repr(m) for m in ours)}?" if ours else ""
