"""export.py: ONNX, TorchScript and safetensors files that load back and give the model's logits (the parity
check), a sidecar with what a deployment needs, and no existing file replaced without --overwrite."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import TINY_MODEL, run_script
from tunecv.data import create_transforms
from tunecv.errors import ONNX_MISSING
from tunecv.inference.trained import load_trained
from tunecv.scripts import export, validate

CPU = ("--num_parallel_workers", "0")


@pytest.fixture
def trained(trained_checkpoint) -> tuple[Path, Path]:
    return trained_checkpoint


def _export(capsys, *args: str) -> tuple[int, list[str], str]:
    """(exit code, stdout lines, stderr) of export.py run in this process (no second torch import)."""
    code = export.main([*args, *CPU])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def _val_batch(ckpt: Path, data: Path) -> tuple[list[Path], torch.Tensor]:
    """All val images, preprocessed as validate.py does, and their paths."""
    cfg = load_trained(str(ckpt), None, {"device": "cpu", "data_dir": str(data)}).cfg
    transform = create_transforms(cfg.data, is_training=False)
    paths = sorted((data / "val").rglob("*.png"))
    return paths, torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])


def test_onnx_with_a_dynamic_batch_runs_in_onnxruntime(trained, tmp_path, capsys):
    data, ckpt = trained
    output = tmp_path / "model.onnx"
    code, lines, err = _export(capsys, "--ckpt_path", str(ckpt), "--format", "onnx", "--dynamic_batch", "--output",
                               str(output))
    assert code == 0, err
    assert lines[:2] == [str(output), f"{output}.json"]
    assert lines[2].startswith("parity: max |logit diff| ") and "on 8 images, batches of 1 and 8" in lines[2]
    assert "Removed" not in err and "unused" not in err  # the ONNX optimiser's notes stay out of the console
    info = json.loads(Path(f"{output}.json").read_text())
    assert info["classes"] == ["circle", "square", "stripes"] and info["num_classes"] == 3
    assert info["input_size"] == [3, 32, 32] and info["input_shape"] == ["batch", 3, 32, 32]
    assert len(info["mean"]) == len(info["std"]) == 3 and info["dynamic_batch"] is True
    assert info["model"] == TINY_MODEL and info["opset"] >= 18 and info["temperature"] == 1.0
    assert info["parity"]["inputs"] == "val split" and info["parity"]["batch_sizes"] == [1, 8]
    assert info["parity"]["max_abs_diff"] < 1e-4 and info["parity"]["tolerance"] == 1e-3

    ort = pytest.importorskip("onnxruntime")
    assert validate.main(["--ckpt_path", str(ckpt), "--data_dir", str(data), "--output", str(tmp_path / "pred.txt"),
                          *CPU]) == 0
    expected = {line.split("\t")[0]: line.split("\t")[1]
                for line in (tmp_path / "pred.txt").read_text().splitlines()[1:]}
    paths, batch = _val_batch(ckpt, data)  # 12 images: neither of the batch sizes it was exported or checked with
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    logits = session.run([info["output_name"]], {info["input_name"]: batch.numpy()})[0]
    assert logits.shape == (12, 3)
    assert {str(p): info["classes"][i] for p, i in zip(paths, logits.argmax(1))} == expected


def test_torchscript_and_safetensors_load_back(trained, capsys):
    data, ckpt = trained
    model = load_trained(str(ckpt), None, {"device": "cpu"}).model.eval()
    _, batch = _val_batch(ckpt, data)
    with torch.inference_mode():
        reference = model(batch)
    for fmt, suffix in (("torchscript", ".pt"), ("safetensors", ".safetensors")):
        code, lines, err = _export(capsys, "--ckpt_path", str(ckpt), "--format", fmt)
        output = ckpt.parent / "export" / f"{TINY_MODEL}_best{suffix}"  # the default: beside the checkpoint
        assert code == 0, err
        assert lines == [str(output), f"{output}.json", lines[2]] and "batches of 1 and 8" in lines[2]
        info = json.loads(Path(f"{output}.json").read_text())
        assert info["format"] == fmt and info["input_size"] == [3, 32, 32] and info["parity"]["max_abs_diff"] < 1e-4
        if fmt == "torchscript":
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch 2.9+ deprecates torch.jit
                assert torch.allclose(torch.jit.load(str(output))(batch), reference, atol=1e-5)
        else:
            from safetensors.torch import load_file

            assert load_file(str(output)).keys() == model.state_dict().keys()


def test_random_inputs_when_the_data_is_not_here(trained, tmp_path, capsys):
    _, ckpt = trained
    code, lines, err = _export(capsys, "--ckpt_path", str(ckpt), "--format", "torchscript", "--output",
                               str(tmp_path / "m.pt"), "--data_dir", str(tmp_path / "gone"))
    assert code == 0 and "on 8 random inputs" in lines[-1]
    assert "random inputs" in err and "--images" in err
    assert json.loads((tmp_path / "m.pt.json").read_text())["parity"]["inputs"] == "random"


def test_existing_output_needs_overwrite(trained, tmp_path, capsys):
    _, ckpt = trained
    output = tmp_path / "model.onnx"
    output.write_text("an earlier export")
    args = ("--ckpt_path", str(ckpt), "--format", "onnx", "--output", str(output),
            "--images", str(trained[0] / "val" / "circle"))
    code, lines, err = _export(capsys, *args)
    assert code == 2 and lines == [] and output.read_text() == "an earlier export"
    assert err.strip().splitlines()[-1] == f"tunecv: error: {output} exists; --overwrite replaces it (or choose " \
                                          "another --output)"
    code, lines, err = _export(capsys, *args, "--overwrite")
    assert code == 0, err
    assert "on 4 images, batch of 1 " in lines[-1]  # a fixed batch of 1: the images run one at a time
    info = json.loads(Path(f"{output}.json").read_text())
    assert info["input_shape"] == [1, 3, 32, 32] and info["parity"]["inputs"] == "images"
    ort = pytest.importorskip("onnxruntime")
    assert ort.InferenceSession(str(output)).get_inputs()[0].shape == [1, 3, 32, 32]


def test_without_the_onnx_packages(trained, tmp_path, capsys, monkeypatch):
    _, ckpt = trained
    output = tmp_path / "model.onnx"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails: exported, but not checked
    code, lines, err = _export(capsys, "--ckpt_path", str(ckpt), "--format", "onnx", "--output", str(output))
    assert code == 0 and lines[-1].startswith("parity: not checked (onnxruntime is not installed: pip install")
    assert "warning: parity not checked" in err
    assert json.loads(Path(f"{output}.json").read_text())["parity"]["max_abs_diff"] is None
    monkeypatch.setitem(sys.modules, "onnx", None)
    code, lines, err = _export(capsys, "--ckpt_path", str(ckpt), "--format", "onnx", "--output", str(output),
                               "--overwrite")
    assert code == 2 and err.strip().splitlines() == [f"tunecv: error: {ONNX_MISSING}"]


def test_parity_failure_writes_nothing(trained, tmp_path, capsys):
    _, ckpt = trained
    pytest.importorskip("onnxruntime")  # without it the ONNX file is not checked
    output = tmp_path / "model.onnx"
    code, lines, err = _export(capsys, "--ckpt_path", str(ckpt), "--format", "onnx", "--output", str(output),
                               "--tolerance", "1e-30")
    assert code == 1 and lines == []
    assert "does not match; nothing written" in err.strip().splitlines()[-1] and "tolerance 1e-30" in err
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temp file nor a sidecar


def test_bad_input_is_one_line(trained, tmp_path, capsys):
    _, ckpt = trained
    for args, needle in ((["--format", "onnx", "--opset", "3"], "--opset 3: give 7 to"),
                         (["--format", "gif"], "invalid choice"),
                         (["--format", "onnx", "--tolerance", "-1"], "--tolerance -1.0: give a number >= 0"),
                         (["--format", "onnx", "--images", str(tmp_path / "none.png")], "no such file")):
        code, lines, err = _export(capsys, "--ckpt_path", str(ckpt), "--output", str(tmp_path / "x.onnx"), *args)
        assert code == 2 and needle in err.strip().splitlines()[-1], err
    proc = run_script("export.py", "--ckpt_path", str(tmp_path / "missing.pth"), "--format", "safetensors",
                      check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"tunecv: error: checkpoint {tmp_path / 'missing.pth'} not found; "
                                                "check --ckpt_path"]


def test_sidecar_carries_the_calibrated_temperature(trained, tmp_path, capsys):
    from tunecv.train.checkpoint import update_checkpoint

    _, original = trained
    ckpt = tmp_path / original.name
    ckpt.write_bytes(original.read_bytes())
    update_checkpoint(ckpt, {"temperature": 2.5})
    code, _, err = _export(capsys, "--ckpt_path", str(ckpt), "--format", "safetensors")
    assert code == 0, err
    info = json.loads((tmp_path / "export" / f"{ckpt.stem}.safetensors.json").read_text())
    assert info["temperature"] == 2.5
