"""README.md stays true: its key reference is the one the config module generates."""

from __future__ import annotations

from pathlib import Path

from tools.config_keys import key_table
from tunecv.config import KEYS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_key_reference_matches_the_config_module():
    text = README.read_text(encoding="utf-8")
    assert key_table() in text
    for key in KEYS:
        assert f"| `{key}` |" in text


def test_readme_opens_with_the_demo_and_test_commands():
    commands = [line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("python3 -m venv")]
    assert "python finetune.py --config configs/demo.yaml" in commands[0]
    assert commands[1].endswith("python -m pytest -q")
