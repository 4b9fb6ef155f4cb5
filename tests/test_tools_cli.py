"""tools/make_shapes.py and tools/config_keys.py, run as a user runs them: a bad argument is one `tunecv: error:`
line and exit 2, found before anything is written; a non-empty target is replaced only with --force."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def assert_one_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "usage:" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tunecv: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("args, needles", [
    (["--size", "0"], ["--size", "0 is out of range", "32"]),
    (["--size", "-5"], ["--size", "-5 is out of range"]),
    (["--size", "8"], ["--size", "8 is out of range", "min_size is at least 32"]),
    (["--size", "100000"], ["--size", "4096"]),
    (["--train", "0"], ["--train", "at least 1"]),
    (["--val", "-1"], ["--val", "at least 1"]),
    (["--max_shapes", "0"], ["--max_shapes"]),
    (["--train", "ten"], ["--train", "'ten' is not a whole number"]),
    (["--bogus"], ["unrecognized arguments: --bogus", "--help"]),
    (["--classes", "blob"], ["invalid choice: 'blob'"]),
    (["--classes", "star", "star"], ["star more than once"]),
])
def test_make_shapes_bad_arguments_write_nothing(tmp_path, args, needles):
    target = tmp_path / "shapes"
    assert_one_error(tool("tools.make_shapes", str(target), *args), *needles)
    assert list(tmp_path.iterdir()) == []


def test_make_shapes_refuses_a_non_empty_target_without_force(tmp_path):
    target = tmp_path / "shapes"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    before = snapshot(target)
    assert_one_error(tool("tools.make_shapes", str(target), "--train", "1", "--val", "1", "--size", "32"),
                     str(target), "not empty", "--force")
    assert snapshot(target) == before
    done = tool("tools.make_shapes", str(target), "--train", "2", "--val", "1", "--size", "32", "--force")
    assert done.returncode == 0, done.stderr
    assert not (target / "notes.txt").exists() and len(list((target / "train").glob("*.png"))) == 2
    annotations = json.loads((target / "annotations" / "instances_val.json").read_text())
    assert len(annotations["images"]) == 1 and annotations["images"][0]["width"] == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # no scratch folder left beside it


def test_make_shapes_unwritable_target(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert_one_error(tool("tools.make_shapes", str(blocker / "shapes"), "--size", "32"), str(blocker), "is a file")
    assert_one_error(tool("tools.make_shapes", str(blocker), "--size", "32"), str(blocker), "is a file")
    assert blocker.read_text() == "x"
    before = sorted(p.name for p in REPO.iterdir())  # --force never replaces the folder the user stands in
    assert_one_error(tool("tools.make_shapes", ".", "--force"), "holds the current folder")
    assert_one_error(tool("tools.make_shapes", str(REPO.parent), "--force"), "holds the current folder")
    assert sorted(p.name for p in REPO.iterdir()) == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_make_shapes_read_only_parent(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        assert_one_error(tool("tools.make_shapes", str(locked / "shapes")), str(locked), "not writable")
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("args, needles", [
    (["--bogus"], ["unrecognized arguments: --bogus"]),
    (["a.md", "b.md"], ["unrecognized arguments: b.md"]),
    (["docs/config.md", "--write"], ["not allowed with"]),
    (["no/such/file.md"], ["no/such/file.md is not a file"]),
])
def test_config_keys_bad_arguments(args, needles):
    before = (REPO / "docs" / "config.md").read_bytes()
    assert_one_error(tool("tools.config_keys", *args), *needles)
    assert (REPO / "docs" / "config.md").read_bytes() == before


def test_config_keys_file_without_markers_is_left_alone(tmp_path):
    doc = tmp_path / "notes.md"
    doc.write_text("# notes\n")
    assert_one_error(tool("tools.config_keys", str(doc)), str(doc), "keys:start")
    assert doc.read_text() == "# notes\n"


def test_config_keys_rewrites_the_table_between_the_markers(tmp_path):
    doc = tmp_path / "config.md"
    doc.write_text("# keys\n<!-- keys:start -->\nold table\n<!-- keys:end -->\nafter\n")
    assert tool("tools.config_keys", str(doc)).returncode == 0
    printed = tool("tools.config_keys")
    assert printed.returncode == 0 and printed.stdout.startswith("**")
    assert doc.read_text() == f"# keys\n<!-- keys:start -->\n\n{printed.stdout}\n<!-- keys:end -->\nafter\n"


@pytest.mark.parametrize("args, needles", [(["--bogus"], ["unrecognized arguments: --bogus"]),
                                           (["docs/mindcv.md"], ["unrecognized arguments: docs/mindcv.md"])])
def test_mindcv_table_bad_arguments_leave_the_doc_alone(args, needles):
    before = (REPO / "docs" / "mindcv.md").read_bytes()
    assert_one_error(tool("tools.mindcv_table", *args), *needles)
    assert (REPO / "docs" / "mindcv.md").read_bytes() == before


def test_mindcv_table_prints_what_the_doc_holds():
    printed = tool("tools.mindcv_table")
    assert printed.returncode == 0 and printed.stdout == (REPO / "docs" / "mindcv.md").read_text(encoding="utf-8")
