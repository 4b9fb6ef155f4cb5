"""Print the config-key reference (Markdown) that README.md carries; a test keeps the two equal.

    python -m tools.config_keys
"""

from __future__ import annotations

from tunecv.config import KEYS, SECTIONS


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


if __name__ == "__main__":
    print(key_table(), end="")
