"""`pip install .` in a fresh virtual environment gives the console scripts tunecv-finetune, -validate, -predict,
-export and -sweep (the top-level scripts' programs), the bundled configs, and the [export], [tensorboard] and
[sweep] extras."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("finetune", "validate", "predict", "export", "sweep")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A new venv that sees this environment's packages (torch, timm: not downloaded again) with tunecv installed
    from the repo, not in development mode: what a user's `pip install .` gets."""
    venv = tmp_path_factory.mktemp("venv")
    # no pip or setuptools of its own: this environment's (requirements-dev.txt) are seen through the .pth below
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # from a copy: pip builds in the source tree (build/, egg-info), which must not change under other tests;
    # without build isolation: setuptools comes from this environment, nothing is downloaded
    source = tmp_path_factory.mktemp("source") / "tunecv"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "ckpt", "build", "*.egg-info", "__pycache__",
                                                                 "tests", "bench", "docs"))
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-cache-dir", str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv


def test_console_scripts_run_help(installed, tmp_path):
    for name in SCRIPTS:
        proc = subprocess.run([str(installed / "bin" / f"tunecv-{name}"), "--help"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.startswith(f"usage: tunecv-{name} ")
        assert "--lr" in proc.stdout  # every config key is a flag, as in the script


def test_installed_package_is_a_copy_with_its_configs(installed, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(f"_base_: presets/resnet.yaml\nnum_classes: 7\ndata_dir: {tmp_path}\n")
    proc = subprocess.run([str(installed / "bin" / "tunecv-finetune"), "--config", str(config), "--print_config"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "num_classes: 7" in proc.stdout and "model: resnet50" in proc.stdout  # the bundled preset was found
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import tunecv; print(tunecv.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    package = Path(where).parent
    assert where.startswith(str(installed)) and (package / "configs" / "demo.yaml").is_file()
    assert {p.relative_to(ROOT / "tunecv") for p in (ROOT / "tunecv").rglob("*.py")} <= \
        {p.relative_to(package) for p in package.rglob("*.py")}  # every module shipped (pyproject lists packages)


def test_installed_script_finds_bundled_configs_by_name(installed, tmp_path):
    """`tunecv-finetune --config demo.yaml` from any folder reads the config inside the installed package; a
    bundled config's relative data_dir is from the working directory, never a path into site-packages."""
    for name in ("demo.yaml", "configs/demo.yaml"):
        proc = subprocess.run([str(installed / "bin" / "tunecv-finetune"), "--config", name, "--print_config"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "dataset: digits" in proc.stdout
    code = ("from tunecv.config import load_config; from tunecv.config.files import BUNDLED_CONFIGS as b; "
            "print(load_config('seeds/hymenoptera_full.yaml').data.data_dir); print(b); "
            "print(load_config(b / 'hymenoptera.yaml').data.data_dir)")
    data_dir, bundled, by_path = subprocess.run([str(installed / "bin" / "python"), "-c", code], cwd=tmp_path,
                                                capture_output=True, text=True, check=True).stdout.splitlines()
    assert bundled.startswith(str(installed)) and data_dir == by_path == "../shared/data/hymenoptera_data"


def test_extras_are_declared(installed):
    code = "from importlib.metadata import metadata; print(metadata('tunecv').get_all('Provides-Extra'))"
    extras = subprocess.run([str(installed / "bin" / "python"), "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert "export" in extras and "tensorboard" in extras and "sweep" in extras


def test_top_level_scripts_are_wrappers_with_the_programs_usage():
    import ast

    for name in SCRIPTS:
        wrapper, program = ROOT / f"{name}.py", ROOT / "tunecv" / "scripts" / f"{name}.py"
        assert ast.get_docstring(ast.parse(wrapper.read_text())) == ast.get_docstring(ast.parse(program.read_text()))
        assert f"from tunecv.scripts.{name} import main" in wrapper.read_text()


def test_finetune_starts_without_what_it_does_not_use():
    """scikit-learn (validate.py's report) and the detection package (task: detection) take ~1.4 s to import: a
    classification run's start-up, part of its time to accuracy, must not pay for them."""
    probe = "import sys, tunecv.scripts.finetune; print(sorted({'sklearn', 'tunecv.detection.run'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
