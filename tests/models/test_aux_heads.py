"""aux_factor: inception_v3's and googlenet's auxiliary classifiers train with a weighted share of the loss; the
model's output stays one tensor."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import run_script
from tunecv.config import ModelConfig
from tunecv.errors import UserError
from tunecv.models.aux_heads import aux_head_keys, aux_heads, with_auxiliary_loss
from tunecv.models.factory import create_model
from tunecv.models.names import check_model_options
from tunecv.models.weights import load_matching


def _inputs(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(2, 3, size, size), torch.tensor([0, 1])


@pytest.mark.parametrize("name, heads, size", [("inception_v3", 1, 299), ("googlenet", 2, 64)])
def test_the_loss_adds_each_auxiliary_head_times_aux_factor(name, heads, size):
    model = create_model(ModelConfig(model=name, aux_factor=0.4), num_classes=3).train()
    assert len(aux_heads(model)) == heads
    inputs, targets = _inputs(size)
    logits = model(inputs)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3)  # never a tuple
    held = [head.tunecv_aux_logits for head in aux_heads(model)]
    assert all(h is not None and h.shape == (2, 3) for h in held)
    base = nn.CrossEntropyLoss()
    expected = base(logits, targets) + 0.4 * sum(base(h, targets) for h in held)
    loss = with_auxiliary_loss(base, model, 0.4)(logits, targets)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for head in aux_heads(model) for p in head.parameters()
               if p.requires_grad and p.dim() > 1)
    assert all(head.tunecv_aux_logits is None for head in aux_heads(model))  # taken: no stale logits next step


def test_evaluation_runs_no_auxiliary_head_and_an_ema_copy_keeps_its_own():
    model = create_model(ModelConfig(model="inception_v3", aux_factor=0.1), num_classes=3)
    inputs, _ = _inputs(299)
    with torch.no_grad():
        model.eval()(inputs)
    assert model.AuxLogits.tunecv_aux_logits is None
    copied = copy.deepcopy(model).train()
    copied(inputs)
    assert copied.AuxLogits.tunecv_aux_logits is not None and model.AuxLogits.tunecv_aux_logits is None


def test_without_aux_factor_no_auxiliary_head_is_built():
    model = create_model(ModelConfig(model="inception_v3"), num_classes=3)
    assert not aux_heads(model) and model.AuxLogits is None
    assert with_auxiliary_loss(nn.CrossEntropyLoss(), model, 0.0).__class__ is nn.CrossEntropyLoss


def test_pretrained_weights_without_auxiliary_heads_load_and_the_heads_stay_new():
    """timm's ImageNet inception_v3 holds no AuxLogits: the auxiliary head is a new layer, like the classifier."""
    model = create_model(ModelConfig(model="inception_v3", aux_factor=0.1), num_classes=3)
    donor = create_model(ModelConfig(model="inception_v3"), num_classes=1000)
    load_matching(model, donor.state_dict(), source="donor")
    assert aux_head_keys(model) and torch.equal(model.Conv2d_1a_3x3.conv.weight, donor.Conv2d_1a_3x3.conv.weight)


def test_torchvision_weights_with_auxiliary_heads_load_into_a_model_without():
    """torchvision's googlenet state holds aux1/aux2; a run without aux_factor drops them rather than failing."""
    with_heads = create_model(ModelConfig(model="googlenet", aux_factor=0.3), num_classes=1000).state_dict()
    model = create_model(ModelConfig(model="googlenet"), num_classes=3)
    load_matching(model, with_heads, source="torchvision state")
    assert torch.equal(model.conv1.conv.weight, with_heads["conv1.conv.weight"])


def test_a_model_without_auxiliary_classifier_refuses_aux_factor():
    with pytest.raises(UserError, match="resnet18 has none, so remove aux_factor"):
        check_model_options(ModelConfig(model="resnet18", aux_factor=0.1))


def test_finetune_with_aux_factor_then_validate(tmp_path, tiny_image_folder):
    out = tmp_path / "ckpt"
    run_script("finetune.py", "--data_dir", str(tiny_image_folder), "--model", "googlenet", "--aux_factor", "0.3",
               "--image_resize", "64", "--batch_size", "4", "--epoch_size", "1", "--num_parallel_workers", "0",
               "--device", "cpu", "--ckpt_save_dir", str(out))
    saved = torch.load(out / "googlenet_best.pth", weights_only=True)
    assert any(key.startswith("aux1.") for key in saved["model"])
    checked = run_script("validate.py", "--ckpt_path", str(out / "googlenet_best.pth"), "--device", "cpu")
    assert "top1" in checked.stdout.lower() or "top-1" in checked.stdout.lower()
    exported = tmp_path / "googlenet.safetensors"  # inference and export leave the training-only heads out
    run_script("export.py", "--ckpt_path", str(out / "googlenet_best.pth"), "--format", "safetensors", "--output",
               str(exported), "--device", "cpu")
    from safetensors.torch import load_file

    assert load_file(str(exported)) and not any(key.startswith(("aux1.", "aux2.")) for key in load_file(str(exported)))
    resumed = run_script("finetune.py", "--data_dir", str(tiny_image_folder), "--model", "googlenet", "--aux_factor",
                         "0", "--image_resize", "64", "--batch_size", "4", "--epoch_size", "2", "--device", "cpu",
                         "--num_parallel_workers", "0", "--ckpt_save_dir", str(out), "--resume", "auto", check=False)
    assert resumed.returncode == 2
    assert resumed.stderr.strip().splitlines()[-1].endswith("set aux_factor 0.3 to resume it")
