"""What every tool in tools/ shares with the main scripts' command line: a bad argument is one `tunecv: error:`
line on stderr and exit 2, found before anything is written; an output folder is built beside its target and
swapped in, so a failed or interrupted tool leaves no half-written folder."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from tunecv import cli
from tunecv.errors import UserError

ToolParser = cli.OneLineParser  # a bad command line: one UserError line, as the programs'


def int_between(low: int, high: int | None = None, why: str = "") -> Callable[[str], int]:
    """An argparse `type`: an integer in [low, high]; `why` says where the bound comes from."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bound = f"at least {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"{value} is out of range, give {bound}{why}")
        return value
    return parse


def run_tool(body: Callable[[], int]) -> int:
    """The programs' error boundary: a UserError is one line and exit 2; Ctrl-C exits 130."""
    try:
        return body()
    except (UserError, KeyboardInterrupt) as err:
        return cli.failure_exit(err)


def check_writable_folder(target: Path, force: bool) -> None:
    """TARGET may be created or replaced: empty unless `force`, and creatable (`check_can_create`)."""
    if target.is_dir() and any(target.iterdir()) and not force:
        raise UserError(f"TARGET {target} is not empty; pass --force to replace it, or choose another folder")
    check_can_create(target)


def check_can_create(target: Path) -> None:
    """TARGET is no file, and the folder it goes in exists or can be made, and is writable."""
    if target.exists() and not target.is_dir():
        raise UserError(f"TARGET {target} is a file; choose a folder")
    if Path.cwd().resolve().is_relative_to(target.resolve()):  # replacing it would pull the folder we stand in
        raise UserError(f"TARGET {target} holds the current folder; choose a new folder, e.g. {target / 'out'}")
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot create TARGET {target}: {parent} is a file, not a folder; choose another TARGET")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create TARGET {target}: {parent} is not writable; choose a folder you can write")


def replace_folder(target: Path, fill: Callable[[Path], object]) -> object:
    """Call `fill(tree)` on a new folder beside TARGET, then swap it in for TARGET (whose old contents go only
    once the new tree is whole); returns what `fill` returns."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tree = scratch / "tree"  # made with the user's umask (mkdtemp's own folder is 0700)
        tree.mkdir()
        result = fill(tree)
        old = scratch / "old"
        if target.exists():
            target.rename(old)
        try:
            tree.rename(target)
        except BaseException:  # the old TARGET goes back where it was
            if old.exists() and not target.exists():
                old.rename(target)
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result
