"""Initial weights: checkpoint formats, head dropping, prefixes, mismatches, unsafe pickles, bundled weights."""

from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from conftest import TINY_MODEL
from tunecv.config import ModelConfig
from tunecv.errors import UserError
from tunecv.models.factory import create_model
from tunecv.models.weights import bundled_weights_path, load_initial_weights, read_state_dict
from tunecv.train.checkpoint import load_checkpoint


def _model(num_classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(ModelConfig(model=TINY_MODEL), num_classes=num_classes)


def _load(model: nn.Module, path: Path, prefix: str | None = None) -> str:
    return load_initial_weights(model, ModelConfig(model=TINY_MODEL, ckpt_path=str(path), ckpt_prefix=prefix))


def _assert_equal_states(model: nn.Module, state: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> None:
    own = model.state_dict()
    keys = [k for k in own if not k.startswith(skip)] if skip else list(own)
    assert keys
    for key in keys:
        assert torch.equal(own[key], state[key]), key


@pytest.fixture
def source() -> dict[str, torch.Tensor]:
    """A trained-looking state: a differently seeded model with non-default BatchNorm buffers."""
    model = _model(seed=1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.num_batches_tracked.fill_(7)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "model", "module_prefix"])
def test_load_checkpoint_layouts(tmp_path, source, wrap):
    state = {
        "raw": source,
        "state_dict": {"state_dict": source, "epoch": 3},
        "model": {"model": source, "optimizer": {}},
        "module_prefix": {f"module.{k}": v for k, v in source.items()},
    }[wrap]
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    model = _model(seed=2)
    assert "checkpoint" in _load(model, path)
    _assert_equal_states(model, source)


def test_load_safetensors(tmp_path, source):
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.items()}, str(path))
    model = _model(seed=2)
    _load(model, path)
    _assert_equal_states(model, source)


def test_head_with_other_class_count_dropped(tmp_path, caplog):
    torch.manual_seed(1)
    five = _model(num_classes=5, seed=1).state_dict()
    path = tmp_path / "five.pth"
    torch.save(five, path)
    model = _model(num_classes=3, seed=2)
    head_before = model.classifier.weight.clone()
    with caplog.at_level("INFO", logger="tunecv.models.weights"):
        _load(model, path)
    assert model.classifier.weight.shape == (3, head_before.shape[1])
    assert torch.equal(model.classifier.weight, head_before)  # the new head stays
    _assert_equal_states(model, five, skip=("classifier.",))
    assert "classifier.weight" in caplog.text


def test_ckpt_prefix_loads_only_that_subtree(tmp_path, source):
    state = {f"backbone.{k}": v for k, v in source.items()}
    state["neck.proj.weight"] = torch.ones(4, 4)  # outside the prefix: ignored
    path = tmp_path / "detector.pth"
    torch.save({"state_dict": state}, path)
    model = _model(seed=2)
    assert "prefix backbone." in _load(model, path, prefix="backbone.")
    _assert_equal_states(model, source)


def test_ckpt_prefix_not_found(tmp_path, source):
    path = tmp_path / "w.pth"
    torch.save(source, path)
    with pytest.raises(UserError, match="prefix 'encoder.'"):
        _load(_model(), path, prefix="encoder.")


def test_missing_key_listed(tmp_path, source):
    del source["conv_stem.weight"]
    path = tmp_path / "w.pth"
    torch.save(source, path)
    with pytest.raises(UserError, match=r"1 missing: conv_stem\.weight"):
        _load(_model(), path)


def test_unexpected_key_listed(tmp_path, source):
    source["extra.layer.weight"] = torch.zeros(2)
    path = tmp_path / "w.pth"
    torch.save(source, path)
    with pytest.raises(UserError, match=r"1 unexpected: extra\.layer\.weight"):
        _load(_model(), path)


def test_shape_mismatch_in_body(tmp_path, source):
    source["conv_stem.weight"] = torch.zeros(8, 3, 5, 5)
    path = tmp_path / "w.pth"
    torch.save(source, path)
    model = _model()
    before = model.conv_stem.weight.clone()
    with pytest.raises(UserError, match=r"conv_stem\.weight \(8, 3, 5, 5\)"):
        _load(model, path)
    assert torch.equal(model.conv_stem.weight, before)  # nothing half-loaded


def test_missing_file_and_not_a_state_dict(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_state_dict(tmp_path / "none.pth")
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(UserError, match=r"\(it holds a list, not a dict of weights\); give ckpt_path a .pth"):
        read_state_dict(listed)
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(UserError, match=r"\(it holds no tensors\)"):
        read_state_dict(empty)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not safetensors")
    with pytest.raises(UserError, match=r"\(a text file, not a safetensors file\)"):
        read_state_dict(broken)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_refused_not_executed(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"model": {"w": torch.zeros(1)}, "config": {}, "classes": [], "x": _Exploit(marker)}
    if writer == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    # torch.save's zip: unpickling its objects is refused; a bare pickle is no PyTorch file at all
    reason = "could run code" if writer == "torch" else "a Python pickle, not a PyTorch file"
    with pytest.raises(UserError, match=reason):
        read_state_dict(path)
    with pytest.raises(UserError, match=reason):
        load_checkpoint(path)
    assert not marker.exists()
    # control: the payload is live, an unsafe load would have run it
    with open(path, "rb") as f:
        torch.load(f, map_location="cpu", weights_only=False) if writer == "torch" else pickle.load(f)
    assert marker.exists()


def test_bundled_tf_efficientnet_lite0_weights():
    path = bundled_weights_path("tf_efficientnet_lite0")
    assert path is not None and path.is_file()
    file_state = torch.load(path, map_location="cpu", weights_only=True)
    first = next(iter(file_state.values()))  # the package's stem convolution (its own key names)
    torch.manual_seed(0)
    model = create_model(ModelConfig(model="tf_efficientnet_lite0"), num_classes=3)
    random_stem = model.conv_stem.weight.clone()
    description = load_initial_weights(model, ModelConfig(model="tf_efficientnet_lite0", pretrained=True))
    assert "bundled" in description
    assert torch.equal(model.conv_stem.weight, first)
    assert not torch.equal(model.conv_stem.weight, random_stem)
    assert model.classifier.weight.shape == (3, 1280)  # 1000-way ImageNet head dropped


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


@pytest.mark.skipif(_resolves("huggingface.co"), reason="the hub is reachable: the weights would be downloaded")
def test_pretrained_offline_is_a_user_error_with_the_offline_options():
    with pytest.raises(UserError) as info:
        load_initial_weights(_model(), ModelConfig(model=TINY_MODEL, pretrained=True))
    message = str(info.value)
    assert "unreachable" in message and "ckpt_path" in message and "tf_efficientnet_lite0" in message


def test_prefix_without_trailing_dot(tmp_path):
    source = _model()
    path = tmp_path / "wrapped.pth"
    torch.save({f"backbone.{k}": v for k, v in source.state_dict().items()}, path)
    state = read_state_dict(path, prefix="backbone")
    assert set(state) == set(source.state_dict())
