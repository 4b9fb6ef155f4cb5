"""Print the config-key reference (Markdown) that docs/config.md carries, or rewrite it in place; a test keeps
the two equal.

    python -m tools.config_keys                  # print
    python -m tools.config_keys docs/config.md   # replace the table between the keys:start / keys:end markers
    python -m tools.config_keys --write          # the same, on this checkout's docs/config.md
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tools.tool_cli import ToolParser, run_tool
from tunecv.config import KEYS, SECTIONS
from tunecv.errors import UserError
from tunecv.utils.fileio import atomic_write_text

START, END = "<!-- keys:start -->", "<!-- keys:end -->"
CONFIG_DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def _yaml_value(value: object) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return {None: "null", True: "true", False: "false"}.get(value, str(value)) \
        if value is None or isinstance(value, bool) else str(value)


def key_table() -> str:
    lines = []
    for section in SECTIONS:
        lines += [f"**{section}**", "", "| key | default | meaning |", "|---|---|---|"]
        for key, (owner, spec) in KEYS.items():
            if owner == section:
                choices = spec.metadata["choices"]
                meaning = spec.metadata["help"] + (f" (`{'` `'.join(choices)}`)" if choices else "")
                lines.append(f"| `{key}` | `{_yaml_value(spec.default)}` | {meaning} |")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ToolParser(prog="python -m tools.config_keys", description=__doc__, allow_abbrev=False,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("doc", nargs="?", type=Path, help="a Markdown file with the keys:start / keys:end markers")
    target.add_argument("--write", action="store_true", help=f"rewrite this checkout's {CONFIG_DOC.name}")
    return parser.parse_args(argv)


def read_doc(doc: Path) -> str:
    """The file's text, once it is known to hold both markers and to be writable."""
    if not doc.is_file():
        raise UserError(f"{doc} is not a file; give the Markdown file that carries the key table, e.g. docs/config.md")
    try:
        text = doc.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {doc} ({err}); give a UTF-8 Markdown file") from None
    if START not in text or END not in text:
        raise UserError(f"{doc} has no {START} ... {END} markers; add them where the key table goes")
    if not os.access(doc.parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot rewrite {doc}: its folder is not writable; check its permissions")
    return text


def update(doc: Path = CONFIG_DOC) -> None:
    """Replace the table between the markers (atomically: a failed write leaves the file as it was)."""
    head, _, rest = read_doc(doc).partition(START)
    _, _, tail = rest.partition(END)
    atomic_write_text(doc, f"{head}{START}\n\n{key_table()}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        args = parse_args(argv)
        if args.doc is None and not args.write:
            print(key_table(), end="")
        else:
            update(CONFIG_DOC if args.write else args.doc)
        return 0
    return run_tool(body)


if __name__ == "__main__":
    sys.exit(main())
