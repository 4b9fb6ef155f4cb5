"""Print the config-key reference (Markdown) that README.md carries, or rewrite it in place; a test keeps
the two equal.

    python -m tools.config_keys             # print
    python -m tools.config_keys README.md   # replace the table between the keys:start / keys:end markers
"""

from __future__ import annotations

import sys
from pathlib import Path

from tunecv.config import KEYS, SECTIONS
from tunecv.fileio import atomic_write_text

START, END = "<!-- keys:start -->", "<!-- keys:end -->"


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


def update(readme: Path) -> None:
    text = readme.read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    atomic_write_text(readme, f"{head}{START}\n\n{key_table()}\n{END}{tail}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        update(Path(sys.argv[1]))
    else:
        print(key_table(), end="")
