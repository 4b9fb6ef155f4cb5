"""Print the config-key reference (Markdown) that docs/config.md carries, or rewrite it in place; a test keeps
the two equal.

    python -m tools.config_keys                  # print
    python -m tools.config_keys docs/config.md   # replace the table between the keys:start / keys:end markers
    python -m tools.config_keys --write          # the same, on this checkout's docs/config.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from tunecv.config import KEYS, SECTIONS
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


def update(doc: Path = CONFIG_DOC) -> None:
    text = doc.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{doc}: no {START} ... {END} markers to replace the key table between")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    atomic_write_text(doc, f"{head}{START}\n\n{key_table()}\n{END}{tail}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        update(CONFIG_DOC if sys.argv[1] == "--write" else Path(sys.argv[1]))
    else:
        print(key_table(), end="")
