"""Search fine-tuning recipes: Optuna samples the searched config values, each trial is an ordinary finetune.py
run in <ckpt_save_dir>/trial_NNN, and the best recipe is written as best.yaml.

    python sweep.py --config x.yaml --search lr=log:1e-4:1e-1 strategy=linear_probe,lp_ft,full \\
        label_smoothing=0:0.2 --trials 20 --ckpt_save_dir ckpt/sweep
    python finetune.py --config ckpt/sweep/best.yaml

The same command run again goes on where the sweep stopped; copies of it with one --storage share its trials
(docs/sweep.md). The pipeline: check_sweep (parse_space; the data, each searched value and their combinations
resolved) → run_search (open_study, then per trial: load_config with its values → finetune.run, one FeatureMemo
shared by the trials) → sweep.csv, sweep.png, best.yaml.
"""

from __future__ import annotations

import logging
import shlex
import sys
from functools import partial
from pathlib import Path
from typing import Any

import torch

from tunecv import cli
from tunecv.config import UserError
from tunecv.scripts import finetune
from tunecv.search.command import Command, check_sweep, trial_argv
from tunecv.train.feature_memo import FeatureMemo
from tunecv.train.loop import EpochHook, FitResult
from tunecv.utils.runtime import free_memory, resolve_device

OPTUNA_MISSING = ('the recipe search needs Optuna; pip install "tunecv[sweep]" (or pip install -r '
                  'requirements-sweep.txt)')
SCRIPT_FLAGS = ("search", "trials", "study_name", "storage", "keep_checkpoints")
KEEP_CHECKPOINTS = ("best", "all", "none")  # tunecv.search.run.drop_checkpoints


def parse(argv: list[str]):
    parser = cli.build_parser("sweep.py", "Search fine-tuning recipes with Optuna: each trial is a finetune.py run "
                                          "with the searched config values; every other flag goes to each trial.")
    parser.add_argument("--search", nargs="+", metavar="KEY=VALUES",
                        help="config keys to search: key=a,b,c (choices), key=lo:hi (uniform), key=log:lo:hi "
                             "(log-scaled)")
    parser.add_argument("--trials", type=int, default=20,
                        help="finished trials (complete or pruned) the study should hold, all workers together; "
                             "a larger number goes on searching (default: 20)")
    parser.add_argument("--study_name", default="sweep", help="the study in the storage (default: sweep)")
    parser.add_argument("--storage", help="Optuna storage URL that workers share: postgresql://user:pass@host/db, "
                                          "mysql://..., sqlite:///path (default: sqlite:///<ckpt_save_dir>/sweep.db)")
    parser.add_argument("--keep_checkpoints", choices=KEEP_CHECKPOINTS, default="best",
                        help="checkpoints a finished trial keeps: best (its _best; _last, which only resumes, is "
                             "deleted), all, or none (default: best)")
    return cli.parse_args(parser, argv, script_flags=SCRIPT_FLAGS)


def train_trial(command: Command, argv: list[str], device: torch.device, memo: FeatureMemo, params: dict[str, Any],
                folder: Path, on_epoch: EpochHook) -> FitResult:
    """One trial: the command's config with the trial's values as flags, trained as finetune.py trains it (run.json
    records the finetune.py command that trains it again); its log lines go to its own train.log. `memo`: the
    frozen layers' outputs the trials share."""
    free_memory()  # the trial before's model and its CUDA blocks, before this one measures the memory left
    cli.next_run_log()
    try:
        return finetune.run(command.load({**params, "ckpt_save_dir": str(folder)}), device,
                            trial_argv(argv, SCRIPT_FLAGS, params, folder), on_epoch=on_epoch, feature_memo=memo,
                            program=finetune_program())
    finally:
        cli.next_run_log()


class _Once(logging.Filter):
    """The console shows a warning once: every trial would repeat the data audit's."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:  # -v: every trial's lines
            return True
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def setup_console(verbose: bool) -> None:
    """Warnings only (each once) and the sweep's own lines; -v: the trials' lines too."""
    cli.setup_logging(quiet=not verbose, verbose=verbose)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.addFilter(_Once())


def finetune_program() -> str:
    """What trains one trial again: tunecv-finetune for tunecv-sweep, else finetune.py beside sweep.py."""
    program = Path(sys.argv[0])
    if program.name.startswith("tunecv-"):
        return "tunecv-finetune"
    return str(program.with_name("finetune.py")) if program.name == "sweep.py" else "finetune.py"


def continue_command(argv: list[str]) -> str:
    program = Path(sys.argv[0]).name
    return shlex.join([program] if program.startswith("tunecv-") else ["python", "sweep.py"]) + \
        ("" if not argv else " " + shlex.join(argv))


def _search_package():
    """tunecv.search.run, or the one line that says how to install Optuna."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UserError(OPTUNA_MISSING) from None
    from tunecv.search import run, study

    return run, study


@cli.closes_quietly_on_broken_pipe
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, overrides = parse(argv)
        setup_console(args.verbose)
        search, studies = _search_package()
        command = Command(args.config, overrides, args.cfg_options)
        space, base, metric = check_sweep(command, args.search, args.trials)
        studies.quiet_optuna(args.verbose)
        device = resolve_device(base.train.device)
        settings = search.Search(space, args.trials, Path(base.train.ckpt_save_dir), metric, base.train.seed,
                                 args.study_name, args.storage, continue_command(argv), args.keep_checkpoints)
        try:
            summary = search.run_search(settings, partial(train_trial, command, argv, device, FeatureMemo()),
                                        lambda params: command.load(params).to_flat(),
                                        lambda line: print(line, flush=True))
        except search.Stopped as stopped:  # Ctrl-C or a signal: what finished is kept, and how to go on
            print(stopped, file=sys.stderr)
            return stopped.code
        print(summary)
        return 0
    except (UserError, RuntimeError, OSError, KeyboardInterrupt) as err:
        code = cli.failure_exit(err)
        if code is None:
            raise
        return code


if __name__ == "__main__":
    sys.exit(main())
