"""The README and docs/ stay true: the key reference is the one the config module generates, the README opens
with the commands CI runs and stays a front door, and every relative link points to a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

from tools.config_keys import CONFIG_DOC, END, START, key_table
from tools.mindcv_table import MINDCV_DOC, mindcv_doc
from tunecv.config import KEYS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _relative_links(path: Path) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    return [target for target in LINK.findall(text)
            if not target.startswith("#") and not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE)]


def test_config_doc_key_reference_matches_the_config_module():
    text = CONFIG_DOC.read_text(encoding="utf-8")
    assert f"{START}\n\n{key_table()}\n{END}" in text
    for key in KEYS:
        assert f"| `{key}` |" in text


def test_mindcv_compatibility_doc_matches_the_code():
    assert MINDCV_DOC.read_text(encoding="utf-8") == mindcv_doc(), "run python -m tools.mindcv_table --write"


def test_readme_opens_with_the_demo_and_test_commands():
    commands = [line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("python3 -m venv")]
    assert "python finetune.py --config configs/demo.yaml" in commands[0]
    assert commands[1].endswith("python -m pytest -q")


def test_readme_is_a_front_door():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 220


def test_relative_links_point_to_existing_files():
    assert DOCS, "docs/*.md not found"
    broken = []
    for path in [README, *DOCS]:
        links = _relative_links(path)
        for target in links:
            if not (path.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_links_every_docs_page():
    linked = {(README.parent / target.split("#", 1)[0]).resolve() for target in _relative_links(README)}
    assert [doc.name for doc in DOCS if doc.resolve() not in linked] == []
