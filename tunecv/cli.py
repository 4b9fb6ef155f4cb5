"""Command line: every config key is a flag (`--lr 0.002`, bare `--pretrained`), logging setup, error boundary."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import logging.handlers
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tunecv.config import KEYS, SECTIONS, key_type
from tunecv.config.compat import underscored
from tunecv.errors import UserError, write_failure


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one UserError line instead of a usage block."""

    def error(self, message: str) -> typing.NoReturn:
        raise UserError(f"{message}; see {self.prog} --help")


def build_parser(prog: str, description: str, exclude: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """A parser with `--config` and one flag per config key (but `exclude`), grouped by section, values as text.
    `prog`: the script's name (`finetune.py`); a console script (`tunecv-finetune`) goes by its own."""
    invoked = Path(sys.argv[0]).name
    parser = OneLineParser(prog=invoked if invoked.startswith("tunecv-") else prog, description=description,
                     allow_abbrev=False)
    parser.add_argument("-c", "--config", help="YAML config file (MindCV keys, _base_ inheritance); flags override it")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars "
                          "(the run's log file keeps everything)")
    loudness.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    parser.add_argument("--cfg-options", "--cfg_options", dest="cfg_options", nargs="+", metavar="KEY=VALUE",
                        help="MMPretrain-style edits of the config file: lr=0.01 lr_scales.classifier=1.2 "
                             "milestones=[3,6] (mapping keys merge)")
    for section in SECTIONS:
        group = parser.add_argument_group(f"{section} keys")
        for key, (owner, spec) in KEYS.items():
            if owner != section or key in exclude:
                continue
            base = key_type(key)
            choices = spec.metadata["choices"]
            help_text = spec.metadata["help"] + (f" [{'|'.join(choices)}]" if choices else "")
            help_text += f" (default: {spec.default})"
            if base is bool:
                group.add_argument(f"--{key}", nargs="?", const="true", default=argparse.SUPPRESS,
                                   metavar="BOOL", help=help_text)
            elif typing.get_origin(base) is tuple:
                group.add_argument(f"--{key}", nargs="+", default=argparse.SUPPRESS, metavar="V", help=help_text)
            else:
                group.add_argument(f"--{key}", default=argparse.SUPPRESS, metavar="V", help=help_text)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None,
               script_flags: tuple[str, ...]) -> tuple[argparse.Namespace, dict[str, Any]]:
    """(script options, config overrides). `--batch-size` is `--batch_size`. Flags that are no known key go to the
    config layer, which maps other tools' names (`--class_num`), ignores MindCV system keys, or rejects them with
    the closest key (or ours for another tool's name: `--learning_rate`)."""
    argv = _underscored_flags(sys.argv[1:] if argv is None else argv)
    args, rest = parser.parse_known_args(_attach_negative_numbers(argv))
    # one token stays text (`--scale 0.5,1.0`, `--freeze_patterns 're:a,b'`); several stay a list of items
    overrides = {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in vars(args).items() if k in KEYS}
    overrides.update(_parse_rest(rest))
    for flag in script_flags:
        overrides.pop(flag, None)
    return args, overrides


def _underscored_flags(argv: list[str]) -> list[str]:
    """`--batch-size 8` as `--batch_size 8` (timm's and torchvision's spelling): hyphens and underscores in a
    flag's name are one (every flag of the programs has its underscored spelling)."""
    out = []
    for token in argv:
        name, eq, value = token.partition("=")
        if name.startswith("--") and len(name) > 2:
            token = "--" + underscored(name[2:]) + eq + value
        out.append(token)
    return out


def is_number(token: str) -> bool:
    """A value like -1 or -1e-3, not a flag."""
    try:
        float(token)
    except ValueError:
        return False
    return True


def _attach_negative_numbers(argv: list[str]) -> list[str]:
    """`--min_lr -1e-6` → `--min_lr=-1e-6`: argparse would read a negative number as an option."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and token.startswith("-") and is_number(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _parse_rest(tokens: list[str]) -> dict[str, str]:
    """Flags argparse does not know (other tools' names, MindCV keys): `--k v [v ...]`, `--k=v`, bare `--k`."""
    parsed: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise UserError(f"unexpected argument {token!r}; options look like --key value")
        key, eq, value = token[2:].partition("=")
        if not eq:
            values = []
            while i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                values.append(tokens[i + 1])
                i += 1
            value = ",".join(values) if values else "true"
        parsed[key] = value
        i += 1
    return parsed


EARLY_RECORDS = 10_000  # log records held until the run's log file opens (a few MB at most)
_COLOURS = {logging.WARNING: "33", logging.ERROR: "31", logging.CRITICAL: "31"}  # yellow, red


def _colour(text: str, level: int, stream) -> str:
    """ANSI colour on a terminal only (never in a file or a pipe, nor with NO_COLOR set)."""
    code = _COLOURS.get(level)
    if not code or os.environ.get("NO_COLOR") or not getattr(stream, "isatty", lambda: False)():
        return text
    return f"\033[{code}m{text}\033[0m"


class _BareInfo(logging.Formatter):
    def __init__(self, stream) -> None:
        super().__init__("%(message)s")
        self.stream = stream

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno == logging.INFO:
            return message
        return _colour(f"{record.levelname.lower()}: {message}", record.levelno, self.stream)


class _Console(logging.StreamHandler):
    """stderr through tqdm.write: a log line goes above any progress bar instead of through it. `hold`: lines
    below WARNING wait for `release_console` (the start-up checks passed); a command that fails before prints its
    one error line alone (`failure_exit` drops them; train.log keeps them when the run gets that far)."""

    def __init__(self, stream: typing.TextIO, hold: bool = False) -> None:
        super().__init__(stream)
        self.held: list[logging.LogRecord] | None = [] if hold else None

    def emit(self, record: logging.LogRecord) -> None:
        if self.held is not None and record.levelno < logging.WARNING:
            self.held.append(record)
            return
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging's own policy: report, never raise
            self.handleError(record)


class LogFile(logging.FileHandler):
    """train.log. A failed write (a full disk) stops the file with one warning instead of logging's traceback
    per line; the run goes on, and its next checkpoint or results write reports the disk as a UserError."""

    def handleError(self, record: logging.LogRecord) -> None:
        failure = sys.exc_info()[1]
        if not isinstance(failure, OSError):
            super().handleError(record)
            return
        self.setLevel(logging.CRITICAL + 1)  # skipped from now on; removing it here would mutate the list in use
        with contextlib.suppress(OSError):  # its buffer cannot be written either
            self.close()
        logging.getLogger(__name__).warning("stopped writing %s: %s", self.baseFilename, failure.strerror or failure)


class _EarlyRecords(logging.handlers.BufferingHandler):
    """What was logged before the run folder exists, held for train.log (`add_log_file`): the first `capacity`
    records, then a count of those left out; never flushed anywhere else, so a run that opens no log file writes
    none."""

    def __init__(self, capacity: int = EARLY_RECORDS) -> None:
        super().__init__(capacity)
        self.left_out = 0

    def shouldFlush(self, record: logging.LogRecord) -> bool:
        return False

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.buffer) < self.capacity:
            self.buffer.append(record)
        else:
            self.left_out += 1

    def replay(self, handler: logging.Handler) -> None:
        """Write the held records through `handler` (their own times and levels), then forget them."""
        for record in self.buffer:
            handler.handle(record)
        if self.left_out:
            handler.handle(logging.makeLogRecord({
                "name": __name__, "levelno": logging.WARNING, "levelname": "WARNING",
                "msg": "%d log lines from before this file was opened were not kept", "args": (self.left_out,)}))
        self.buffer.clear()


def setup_logging(quiet: bool = False, verbose: bool = False, hold: bool = False) -> None:
    """The console: INFO lines bare on stderr; `quiet`: warnings and errors only, and no progress bars
    (`progress_bar` follows this handler's level); `verbose`: tunecv's debug lines too (other libraries' stay
    hidden: PIL and matplotlib write one per file they open), as they come; `hold`: INFO lines wait for
    `release_console`. Records are also held for `add_log_file`."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    root.setLevel(logging.INFO)  # the log file gets INFO even when the console does not
    logging.getLogger("tunecv").setLevel(logging.DEBUG if verbose else logging.NOTSET)
    console = _Console(sys.stderr, hold=hold and not verbose)
    console.setLevel(level)
    console.setFormatter(_BareInfo(sys.stderr))
    root.addHandler(console)
    root.addHandler(_EarlyRecords())


def release_console(drop: bool = False) -> None:
    """The console lines held so far go out (`drop`: are forgotten), and the next ones as they come."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _Console) and handler.held is not None:
            held, handler.held = handler.held, None
            for record in [] if drop else held:
                handler.emit(record)


def add_log_file(log_file: str | Path) -> None:
    """The run's log file (replacing an earlier one): what the root logger passes, INFO up (tunecv's DEBUG when
    verbose), with timestamps, whatever the console shows; it starts with the records logged before it opened."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, LogFile)]:
        root.removeHandler(handler)
        handler.close()
    try:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = LogFile(log_file, encoding="utf-8")
    except OSError as err:
        message = write_failure(err.errno, log_file)
        if message is None:
            raise
        raise UserError(message) from None
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for early in [h for h in root.handlers if isinstance(h, _EarlyRecords)]:
        early.replay(file_handler)
        root.removeHandler(early)
        early.close()
    root.addHandler(file_handler)


def next_run_log() -> None:
    """The next run in this process starts a log file of its own (a recipe search runs its trials one after
    another): the current run's log file closes, and what is logged from now on is held for the next
    `add_log_file` (what was held before is dropped)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, (LogFile, _EarlyRecords))]:
        root.removeHandler(handler)
        handler.close()
    root.addHandler(_EarlyRecords())


def closes_quietly_on_broken_pipe(main: Callable[..., int]) -> Callable[..., int]:
    """`tunecv-validate ... | head` closes stdout early: exit as `cat` would (141: SIGPIPE), not with a traceback."""

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> int:
        try:
            return main(*args, **kwargs)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail too
            return 141

    return wrapped


def handled_exit(err: BaseException) -> int:
    """failure_exit's code for `err`, or `err` raised again (not the user's to fix: its traceback)."""
    code = failure_exit(err)
    if code is None:
        raise err
    return code


def failure_exit(err: BaseException, batch_size: int | None = None, task: str = "classification") -> int | None:
    """One line on stderr and the exit code for a failure the user can act on: bad input (2), CUDA out of memory
    or a full disk (2), Ctrl-C (130); None for anything else, which the caller re-raises."""
    from tunecv.errors import UserError, runtime_failure

    if isinstance(err, KeyboardInterrupt):
        release_console(drop=True)
        print("tunecv: interrupted", file=sys.stderr)
        return 130
    message = str(err) if isinstance(err, UserError) else runtime_failure(err, batch_size, task)
    if message is None:
        return None
    release_console(drop=True)  # the start-up lines before it: the one line says what went wrong
    print(_colour(f"tunecv: error: {message}", logging.ERROR, sys.stderr), file=sys.stderr)
    return 2
