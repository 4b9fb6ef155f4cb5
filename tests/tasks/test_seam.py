"""The task seam: one place chooses the task, no `task` branch anywhere else, each task has every stage, and the
package's import graph has no circle (type-only imports included)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tunecv.config import load_config
from tunecv.config.registries import TASKS as TASK_NAMES
from tunecv.tasks import TASKS, create_task
from tunecv.tasks.base import Task

PACKAGE = Path(__file__).resolve().parents[2] / "tunecv"
TASK_BRANCH = re.compile(r"""\.task\s*[!=]=|[!=]=\s*["'](classification|detection)["']""")


def test_the_registry_holds_every_task_the_config_accepts():
    assert set(TASKS) == set(TASK_NAMES)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_each_task_implements_the_whole_interface(name):
    cfg = load_config(None, {"task": name, "data_dir": ".", "model": "fasterrcnn_mobilenet_v3_large_fpn"}
                      if name == "detection" else {"data_dir": "."})
    task = create_task(cfg)
    assert task.name == name
    wanted = {member for cls in Task.__mro__ if cls.__module__.startswith("tunecv")
              for member in vars(cls) if not member.startswith("_")}
    missing = sorted(member for member in wanted if not hasattr(task, member))
    assert not missing, f"{name} lacks {missing}"


def test_no_task_branch_outside_the_seam():
    """Which task runs is asked in tunecv.tasks.create_task only; everything else calls the task's methods."""
    found = [f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
             for path in PACKAGE.rglob("*.py") for number, line in enumerate(path.read_text().splitlines(), 1)
             if TASK_BRANCH.search(line)]
    assert not found, "\n".join(found)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The tunecv modules `path` imports anywhere (type-only and function-level imports too), with the packages
    whose __init__ those imports run."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tunecv"):
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("tunecv")]
        for name in names:
            parts = name.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules
    return found


def test_the_package_has_no_import_circle():
    files = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in PACKAGE.rglob("*.py")}
    graph = {module: _imports(path, set(files)) - {module} for module, path in files.items()}
    graph = {module: {t for t in targets if not module.startswith(t + ".")} for module, targets in graph.items()}
    visiting, done = [], set()

    def visit(module: str) -> None:
        if module in visiting:
            pytest.fail("import circle: " + " -> ".join(visiting[visiting.index(module):] + [module]))
        if module in done:
            return
        visiting.append(module)
        for target in sorted(graph[module]):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
