"""The user-mistake battery of tests/test_user_mistakes.py as a table: for each mistake, the exit code, whether the
files it found were left as they were, and the last line the script printed. `--repo` runs another checkout's
scripts (an earlier commit: `git worktree add /tmp/old <commit>`), for a before / after comparison.

    python -m bench.mistakes > after.md
    python -m bench.mistakes --repo /tmp/old > before.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from test_user_mistakes import MISTAKES, attempt, write_workspace  # noqa: E402


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    found = lines[-1] if lines else ""
    return found if len(found) <= 240 else found[:237] + "..."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=TESTS.parent, help="the checkout whose scripts run")
    args = parser.parse_args()
    repo = args.repo.resolve()
    if not (repo / "finetune.py").is_file():
        parser.error(f"{repo} has no finetune.py; give the root of a tunecv checkout")
    with tempfile.TemporaryDirectory() as tmp:
        template = write_workspace(Path(tmp) / "template", repo)
        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(lambda item: attempt(template, Path(tmp) / f"case{item[0]}", item[1], repo),
                                 enumerate(MISTAKES)))
    print("| mistake | exit | files kept | lines | message (last line) |")
    print("|---|---|---|---|---|")
    for mistake, (proc, unchanged) in zip(MISTAKES, done):
        output = proc.stderr + proc.stdout
        lines = len([line for line in output.strip().splitlines() if line.strip()])
        message = last_line(output).replace("|", "\\|")
        traceback = " (traceback)" if "Traceback" in output else ""
        print(f"| {mistake.name} | {proc.returncode}{traceback} | {'yes' if unchanged else 'NO'} | {lines} | "
              f"{message} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
