"""Stopping and resuming a run: the `_last` checkpoint to resume from and the check that it is this run, the
random state a resumed run needs to repeat the uninterrupted one exactly, `GracefulStop` for SIGTERM / Ctrl-C,
and the run folder (never another run's, unless asked)."""

from __future__ import annotations

import json
import logging
import os
import random
import shlex
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunecv.config import Config
from tunecv.errors import UserError
from tunecv.report.manifest import run_differences
from tunecv.train.checkpoint import file_stem, load_checkpoint
from tunecv.utils import distributed

logger = logging.getLogger(__name__)


def find_last(resume: str, ckpt_save_dir: str | None, model_name: str, runs_root: str = "./ckpt") -> Path:
    """The checkpoint `resume` names: a path, or `auto`: the newest `<model>_last.pth` in ckpt_save_dir, or in
    the run folders under ./ckpt when ckpt_save_dir is left to its timestamped default."""
    if resume != "auto":
        path = Path(resume)
        if path.is_dir():
            raise UserError(f"resume: {path} is a folder; pass --resume auto --ckpt_save_dir {path}, or the path of "
                            "its <model>_last.pth")
        if not path.is_file():
            raise UserError(f"resume: {path} not found; give a <model>_last.pth or resume: auto")
        return path
    name = f"{file_stem(model_name)}_last.pth"
    candidates = [Path(ckpt_save_dir) / name] if ckpt_save_dir else list(Path(runs_root).glob(f"*/{name}"))
    found = [path for path in candidates if path.is_file()]
    if not found:
        where = ckpt_save_dir or f"{runs_root}/*/"
        raise UserError(f"resume: auto found no {name} in {where}; start without --resume, or pass its path")
    return max(found, key=lambda path: path.stat().st_mtime)


def random_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU, CUDA) generator states, as tensors and lists that weights_only loads."""
    version, words, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(words), gauss], "torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict[str, Any]) -> None:
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunStopped(Exception):
    """Training stopped on a signal after writing `_last`."""

    def __init__(self, signum: int, last_path: Path, where: str) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}; {last_path} holds the run")
        self.signum, self.last_path = signum, last_path


class GracefulStop:
    """While active, SIGTERM (preemption, torchrun) and SIGINT (Ctrl-C) ask training to stop after the current
    optimizer step, once `_last` is written; a second Ctrl-C stops at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        # A raw write: the signal may land while a logging handler is flushing, and logging from here would
        # re-enter that stream ("reentrant call inside BufferedWriter").
        if distributed.is_main():
            os.write(2, f"tunecv: {signal.Signals(signum).name}: stopping after this step and saving "
                     f"the run; Ctrl-C again to stop at once (pid {os.getpid()})\n".encode())


def batch_layout(batch_size: int | None, accumulation_steps: int) -> dict[str, int | None]:
    """What a position inside an epoch is counted in: resuming on another layout would land elsewhere."""
    return {"world_size": distributed.world_size(), "batch_size": batch_size,
            "gradient_accumulation_steps": accumulation_steps}


# what decides which parameters train and in which optimizer groups: the `_last` optimizer state fits no other
TRAINED_PARAMETER_KEYS = ("strategy", "freeze", "frozen_stages", "freeze_layers", "freeze_patterns",
                          "unfreeze_patterns", "freeze_epochs", "unfreeze_schedule", "lr_scales", "paramwise_cfg",
                          "head_lr_scale", "layer_decay", "weight_decay_filter", "trainable_backbone_layers", "opt")


def changed_training_keys(saved: dict[str, Any], flat: dict[str, Any]) -> list[str]:
    """`key a -> b` for each TRAINED_PARAMETER_KEYS value that differs from the checkpoint's config."""
    def same(a: Any, b: Any) -> bool:  # a checkpoint's lists are the config's tuples
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)

    return [f"{key} {saved[key]!r} -> {flat[key]!r}" for key in TRAINED_PARAMETER_KEYS
            if key in saved and key in flat and not same(saved[key], flat[key])]


# what an epoch's order is drawn from: an epoch resumed in the middle on another goes on in another order
EPOCH_ORDER_KEYS = ("shuffle", "sampler", "aug_repeats")


def changed_order(saved: dict[str, Any], flat: dict[str, Any]) -> list[str]:
    """The epoch order's keys that differ from the checkpoint's config (aug_repeats 0 and 1 are both off)."""
    def value(config: dict[str, Any], key: str) -> Any:
        return max(config[key], 1) if key == "aug_repeats" else config[key]

    changed = [f"{key} {saved[key]!r} -> {flat[key]!r}" for key in EPOCH_ORDER_KEYS
               if key in saved and key in flat and value(saved, key) != value(flat, key)]
    return [f"the rest of the epoch would come in another order ({', '.join(changed)})"] if changed else []


def check_same_run(cfg: Config, checkpoint: dict, classes: list[str], fingerprint: str, force: bool = False) -> None:
    """A UserError naming each difference between this run and the checkpoint's (`force`: warnings instead)."""
    saved_aux = checkpoint.get("config", {}).get("aux_factor") or 0.0
    if (saved_aux > 0) != (cfg.model.aux_factor > 0):  # the weights themselves differ: no forcing past it
        raise UserError(f"the run being resumed has {'auxiliary heads' if saved_aux > 0 else 'no auxiliary heads'} "
                        f"(aux_factor {saved_aux:g}) and this one {'has' if cfg.model.aux_factor > 0 else 'has not'}; "
                        f"set aux_factor {saved_aux:g} to resume it")
    differences = run_differences(checkpoint, cfg.model.model, classes, fingerprint)
    changed = changed_training_keys(checkpoint.get("config", {}), cfg.to_flat())
    if changed:
        differences.append(f"other parameters would train ({', '.join(changed)})")
    layout = batch_layout(cfg.loader.batch_size, cfg.train.gradient_accumulation_steps)
    if checkpoint.get("layout", layout) != layout:
        differences.append("batches differ: " + ", ".join(f"{key} {layout[key]} (checkpoint: {value})" for key, value
                                                          in checkpoint["layout"].items() if layout[key] != value))
    if checkpoint.get("epoch_progress"):
        differences += changed_order(checkpoint.get("config", {}), cfg.to_flat())
    if differences and not force:
        raise UserError(f"this is not the run being resumed: {'; '.join(differences)}; fix the config or data, or "
                        "pass --resume_force to resume anyway")
    for difference in differences:
        logger.warning("resume_force: resuming although the %s", difference)


# what `_last` holds besides the weights, optimizer and random state (tunecv.train.state)
RESUME_KEYS = ("global_step", "phase_start", "best", "ema_best", "history")


RESUME_FIX = "resume from the <model>_last.pth of the run, or start a new run"


def training_checkpoint(path: Path) -> dict:
    checkpoint = load_checkpoint(path, fix=RESUME_FIX)
    if "optimizer" not in checkpoint or "rng" not in checkpoint:
        raise UserError(f"{path} holds no training state to resume (a _best or per-epoch checkpoint?); resume from "
                        "<model>_last.pth, or start a new run with --ckpt_path to load its weights")
    missing = [key for key in RESUME_KEYS if key not in checkpoint]
    if missing:
        raise UserError(f"{path} was written by an older tunecv (its training state has no {', '.join(missing)}); "
                        "resume it with the version that wrote it, or start a new run with --ckpt_path to load its "
                        "weights")
    return checkpoint


RUN_FILES = ("results.txt", "run.json", "*_last.pth", "*_best.pth", "*_best.safetensors", "*_best.json")


def run_files_in(folder: str | Path) -> list[str]:
    """The names of the files in `folder` that show a finetune.py run was written there."""
    return sorted({path.name for pattern in RUN_FILES for path in Path(folder).glob(pattern)})


def with_run_dir(cfg: Config, resume_path: Path | None, refuse: bool = True) -> Config:
    """ckpt_save_dir: as set; else the resumed run's folder; else a new ./ckpt/<model>_<time> (the first
    process's name, on all). A folder holding another run is refused (`refuse`) unless resuming or
    `overwrite`."""
    out_dir = cfg.train.ckpt_save_dir or (str(resume_path.parent) if resume_path else None)
    if out_dir is None:
        out_dir = distributed.broadcast(new_run_dir(cfg.model.model) if distributed.is_main() else None)
    found = run_files_in(out_dir)
    if found and resume_path is None and refuse:
        if not cfg.train.overwrite and not any(name.endswith((".pth", ".safetensors")) for name in found):
            raise UserError(f"{out_dir} holds a run that stopped before saving a checkpoint ({', '.join(found[:3])}), "
                            "so there is nothing to resume; pass --overwrite to start it again, or another "
                            "--ckpt_save_dir")
        if not cfg.train.overwrite:
            raise UserError(f"{out_dir} holds an earlier run ({', '.join(found[:3])}); pass --resume auto to continue "
                            "it (with a larger --epoch_size to train a finished one further), --overwrite to replace "
                            "it, or another --ckpt_save_dir")
        logger.warning("%s holds an earlier run; its results and checkpoints will be replaced (overwrite)", out_dir)
    return replace(cfg, train=replace(cfg.train, ckpt_save_dir=out_dir))


def new_run_dir(model_name: str, root: str = "ckpt") -> str:
    stem = Path(root) / f"{file_stem(model_name)}_{time.strftime('%Y%m%d-%H%M%S')}"
    path, count = stem, 1
    while path.exists():
        count += 1
        path = stem.with_name(f"{stem.name}-{count}")
    return str(path)


def resume_command(argv: list[str] | None, last_path: Path, world_size: int = 1) -> str:
    """This command line with `--resume <last_path>` in place of any earlier --resume (under torchrun for a
    distributed run)."""
    args = list(sys.argv[1:] if argv is None else argv)
    kept = [arg for i, arg in enumerate(args) if not (arg.startswith("--resume") and not arg.startswith(
        "--resume_force")) and not (i > 0 and args[i - 1] == "--resume")]
    program = Path(sys.argv[0]).name
    # a console script (tunecv-finetune) is run by name; torchrun needs it as a module
    if program.startswith("tunecv-"):
        command = ["torchrun", "--nproc_per_node", str(world_size), "-m", "tunecv.scripts.finetune"] \
            if world_size > 1 else [program]
    else:
        command = ["torchrun", "--nproc_per_node", str(world_size), "finetune.py"] if world_size > 1 \
            else ["python", "finetune.py"]
    return shlex.join([*command, *kept, "--resume", str(last_path)])
