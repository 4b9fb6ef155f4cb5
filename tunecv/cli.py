"""Command line: every config key is a flag (`--lr 0.002`, bare `--pretrained`), logging setup, error boundary."""

from __future__ import annotations

import argparse
import logging
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunecv.config import KEYS, SECTIONS, key_type
from tunecv.errors import UserError


def build_parser(prog: str, description: str, exclude: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """A parser with `--config` and one flag per config key (but `exclude`), grouped by section, values as text."""
    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False)
    parser.add_argument("-c", "--config", help="YAML config file (MindCV keys); flags override it")
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
    """(script options, config overrides). Flags that are no known key go to the config layer, which maps
    other tools' names (`--class_num`), ignores MindCV system keys, or rejects them with the closest key."""
    args, rest = parser.parse_known_args(argv)
    overrides = {k: (",".join(v) if isinstance(v, list) else v) for k, v in vars(args).items()
                 if k in KEYS}
    overrides.update(_parse_rest(rest))
    for flag in script_flags:
        overrides.pop(flag, None)
    return args, overrides


def _parse_rest(tokens: list[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise UserError(f"unexpected argument {token!r}; options look like --key value")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value, i = tokens[i + 1], i + 1
            else:
                value = "true"
        parsed[key] = value
        i += 1
    return parsed


class _BareInfo(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno == logging.INFO else f"{record.levelname.lower()}: {message}"


def setup_logging(log_file: str | Path | None = None, verbose: bool = False) -> None:
    """INFO lines bare on stderr; the log file (if any) gets timestamps."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(_BareInfo("%(message)s"))
    root.addHandler(console)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(file_handler)


def error_boundary(main: Callable[[], int]) -> int:
    """User errors: one line on stderr, exit 2. Ctrl-C: exit 130. Bugs keep their traceback."""
    try:
        return main()
    except UserError as err:
        print(f"tunecv: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tunecv: interrupted", file=sys.stderr)
        return 130
