"""Files that are no checkpoint: wherever one is read (validate.py, predict.py, export.py --ckpt_path; finetune.py's
ckpt_path and --resume) the user gets one sentence naming the file, a short reason read from its bytes, and what to
give instead; exit 2, no traceback, never torch's advice to load it with weights_only=False."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import TINY_MODEL
from tunecv.config import ModelConfig
from tunecv.errors import UserError
from tunecv.models.factory import create_model
from tunecv.models.file_problems import is_text, safetensors_problem
from tunecv.models.weights import TUNECV_FIX, WEIGHTS_FIX, read_state_dict
from tunecv.scripts import export, finetune, predict, validate
from tunecv.train.checkpoint import load_checkpoint, save_checkpoint
from tunecv.train.resume import RESUME_FIX

OBJECTS = "it holds Python objects besides tensors, and unpickling those could run code"
# file name -> the reason the message gives
REASONS = {
    "notes.pth": "a text file, not a PyTorch file",
    "empty.pth": "an empty file",
    "truncated.pth": "truncated or damaged: its zip archive is incomplete",
    "random.pth": "not a PyTorch file",
    "object.pth": OBJECTS,
    "folder.pth": "a directory, not a file",
    "truncated.safetensors": "truncated",
    "garbage.safetensors": "not a safetensors file",
    "notes.safetensors": "a text file, not a safetensors file",
}


class Settings:  # any class: torch.save pickles its instances as objects weights_only refuses
    def __init__(self) -> None:
        self.lr = 0.1


def write_bad_files(folder: Path) -> dict[str, Path]:
    """Each kind of file users give by mistake, from real checkpoints where it matters (a truncated one is the first
    half of a real tunecv checkpoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = create_model(ModelConfig(model=TINY_MODEL), num_classes=3).state_dict()
    real = folder / "real.pth"
    save_checkpoint({"model": state, "config": {"model": TINY_MODEL}, "classes": ["a", "b", "c"]}, real)
    real_st = folder / "real.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, real_st)
    files = {name: folder / name for name in [*REASONS, "plain.pth"]}
    files["notes.pth"].write_text("model: resnet50\nlr: 0.1\n")
    files["empty.pth"].write_bytes(b"")
    files["truncated.pth"].write_bytes(real.read_bytes()[:real.stat().st_size // 2])
    files["random.pth"].write_bytes(b"\x00" + random.Random(0).randbytes(4096))
    torch.save(Settings(), files["object.pth"])
    files["folder.pth"].mkdir()
    files["truncated.safetensors"].write_bytes(real_st.read_bytes()[:real_st.stat().st_size // 2])
    files["garbage.safetensors"].write_bytes(b"\x00\x01" + random.Random(1).randbytes(4096))
    files["notes.safetensors"].write_text("weights: none\n")
    torch.save(state, files["plain.pth"])
    return files


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    return write_bad_files(tmp_path_factory.mktemp("bad"))


def _one_sentence(message: str) -> None:
    assert "\n" not in message and "weights_only" not in message.lower() and len(message) < 300, message


@pytest.mark.parametrize("name", sorted(REASONS))
def test_each_kind_of_bad_file_gets_its_reason(bad_files, name):
    path = bad_files[name]
    with pytest.raises(UserError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == f"{path} is not a readable checkpoint ({REASONS[name]}); {TUNECV_FIX}"
    _one_sentence(str(caught.value))
    with pytest.raises(UserError) as caught:  # finetune.py's ckpt_path: any weights, so another fix
        read_state_dict(path)
    assert str(caught.value) == f"{path} is not a readable checkpoint ({REASONS[name]}); {WEIGHTS_FIX}"


def test_a_plain_state_dict_is_weights_for_ckpt_path_but_no_checkpoint_to_validate(bad_files):
    path = bad_files["plain.pth"]
    assert set(read_state_dict(path)) == set(create_model(ModelConfig(model=TINY_MODEL), 3).state_dict())
    with pytest.raises(UserError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (f"{path} is not a tunecv checkpoint (a plain state_dict, without the config and "
                                 f"classes finetune.py saves); {TUNECV_FIX}")


def test_a_checkpoint_of_foreign_parts_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "config": "resnet", "classes": ["a"]}, path)
    with pytest.raises(UserError, match=r"not a tunecv checkpoint \(its config is of another kind\)"):
        load_checkpoint(path)


def test_safetensors_problems_from_the_bytes():
    header = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
    whole = len(header).to_bytes(8, "little") + header + bytes(16)
    assert safetensors_problem(b"", 0) == "an empty file"
    assert safetensors_problem(whole[:30], 30) == "truncated"  # the header itself cut
    assert safetensors_problem(whole[:-4], len(whole) - 4) == "truncated"  # the tensors' bytes cut
    assert safetensors_problem(whole[:8] + b'{"w": 1}' + bytes(60), 76) == "damaged: its header is not valid"
    assert safetensors_problem(b"\x89PNG\r\n\x1a\n\x00\x00", 10) == "not a safetensors file"
    assert is_text("poids: aucun, ¿qué?\n".encode()) and not is_text(b"ab\x00cd")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("tunecv: error:")]
    assert len(lines) == 1 and "Traceback" not in err and "weights_only" not in err, err
    return lines[0]


def _entry_points(path: Path, tmp_path: Path) -> dict[str, list[str]]:
    return {"validate": ["--ckpt_path", str(path)],
            "predict": ["--ckpt_path", str(path), str(tmp_path)],
            "export": ["--ckpt_path", str(path), "--format", "safetensors", "--output", str(tmp_path / "m.st")]}


@pytest.mark.parametrize("name", sorted(REASONS))
def test_validate_predict_and_export_exit_2_with_the_sentence(bad_files, tmp_path, capsys, name):
    path = bad_files[name]
    for script, argv in _entry_points(path, tmp_path).items():
        main = {"validate": validate.main, "predict": predict.main, "export": export.main}[script]
        assert main(argv) == 2, script
        assert _error_line(capsys) == (f"tunecv: error: {path} is not a readable checkpoint ({REASONS[name]}); "
                                       f"{TUNECV_FIX}"), script


def _finetune_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data_dir", str(data), "--model", TINY_MODEL, "--image_resize", "32", "--batch_size", "4",
            "--epoch_size", "1", "--num_parallel_workers", "0", "--device", "cpu", "--ckpt_save_dir", str(out),
            *extra]


@pytest.mark.parametrize("name", ["notes.pth", "truncated.pth", "object.pth", "folder.pth", "truncated.safetensors"])
def test_finetune_ckpt_path_exit_2_with_the_sentence(bad_files, tiny_image_folder, tmp_path, capsys, name):
    path = bad_files[name]
    assert finetune.main(_finetune_args(tiny_image_folder, tmp_path / "ckpt", "--ckpt_path", str(path))) == 2
    assert _error_line(capsys) == (f"tunecv: error: {path} is not a readable checkpoint ({REASONS[name]}); "
                                   f"{WEIGHTS_FIX}")


@pytest.mark.parametrize("name", ["notes.pth", "empty.pth", "truncated.pth", "random.pth", "object.pth", "plain.pth"])
def test_finetune_resume_exit_2_with_the_sentence(bad_files, tiny_image_folder, tmp_path, capsys, name):
    path = bad_files[name]
    assert finetune.main(_finetune_args(tiny_image_folder, tmp_path / "ckpt", "--resume", str(path))) == 2
    line = _error_line(capsys)
    assert line.startswith(f"tunecv: error: {path} is not a ") and line.endswith(RESUME_FIX), line
    assert f"({REASONS[name]})" in line if name in REASONS else "a plain state_dict" in line
