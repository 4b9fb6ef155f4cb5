"""Models: name resolution, new heads (timm and torchvision), freezing, BatchNorm of a frozen backbone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import TINY_MODEL, apply_freeze
from tunecv.config import FinetuneConfig, ModelConfig
from tunecv.errors import UserError
from tunecv.models.factory import (
    classifier_name,
    count_params,
    create_model,
    frozen_modules,
    num_outputs,
    set_train_mode,
)
from tunecv.models.mindcv_names import MINDCV_MODELS, mindcv_target
from tunecv.models.names import data_defaults, resolve_model_name


@pytest.mark.parametrize("name, expected", [
    ("resnet18", ("timm", "resnet18")),
    ("tf_efficientnet_lite0", ("timm", "tf_efficientnet_lite0")),
    ("resnet18.a1_in1k", ("timm", "resnet18.a1_in1k")),  # timm pretrained tag
    ("mobilenet_v3_small_100", ("timm", "mobilenetv3_small_100")),  # MindCV alias
    ("vit_b_16_224", ("timm", "vit_base_patch16_224")),
    ("squeezenet1_1", ("torchvision", "squeezenet1_1")),
    ("googlenet", ("torchvision", "googlenet")),
])
def test_resolve_model_name(name, expected):
    assert resolve_model_name(name) == expected


def test_every_mindcv_name_points_at_a_timm_or_torchvision_model():
    for alias in MINDCV_MODELS:
        assert resolve_model_name(alias)[1] == mindcv_target(alias)[0], alias


def test_unknown_model_user_error_with_close_names():
    with pytest.raises(UserError) as info:
        resolve_model_name("efficientnet_b00")
    assert "efficientnet_b0" in str(info.value)


def test_data_defaults_torchvision_is_imagenet():
    assert data_defaults("googlenet")["mean"] == (0.485, 0.456, 0.406)


@pytest.mark.parametrize("name", ["squeezenet1_1", "googlenet", "shufflenet_v2_x0_5"])
def test_torchvision_model_gets_new_head(name):
    torch.manual_seed(0)
    model = create_model(ModelConfig(model=name), num_classes=4).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 4)
    assert num_outputs(model) == 4


def test_torchvision_in_channels_other_than_3_is_user_error():
    with pytest.raises(UserError, match="in_channels"):
        create_model(ModelConfig(model="shufflenet_v2_x0_5", in_channels=1), num_classes=2)


def test_timm_model_gets_new_head(tiny_model):
    model = create_model(ModelConfig(model=tiny_model), num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert classifier_name(model) == "classifier"


def test_timm_in_channels_and_drop_rate(tiny_model):
    model = create_model(ModelConfig(model=tiny_model, in_channels=1, drop_rate=0.3), num_classes=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 2)
    assert model.drop_rate == 0.3


def _tiny(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return create_model(ModelConfig(model=TINY_MODEL), num_classes=num_classes)


def test_apply_freeze_all_leaves_only_classifier_trainable():
    model = _tiny()
    apply_freeze(model, FinetuneConfig(freeze="all"))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    assert count_params(model)[0] == 3 * model.classifier.in_features + 3


def test_apply_freeze_all_torchvision_conv_head():
    model = create_model(ModelConfig(model="squeezenet1_1"), num_classes=2)
    apply_freeze(model, FinetuneConfig(freeze="all"))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"classifier.1.weight", "classifier.1.bias"}


def test_apply_freeze_none_trains_everything():
    model = _tiny()
    apply_freeze(model, FinetuneConfig(freeze="none"))
    trainable, total = count_params(model)
    assert trainable == total > 0


def test_set_train_mode_keeps_frozen_batchnorm_in_eval():
    model = _tiny()
    apply_freeze(model, FinetuneConfig(freeze="all"))
    set_train_mode(model)
    assert model.training
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(not m.training for m in norms)
    assert model.classifier.training
    assert frozen_modules(model)


def test_set_train_mode_without_freeze_trains_batchnorm():
    model = _tiny()
    model.eval()
    set_train_mode(model)
    assert all(m.training for m in model.modules())


def test_set_train_mode_keeps_parameterless_batchnorm_of_frozen_backbone_in_eval():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    apply_freeze(model, FinetuneConfig(freeze="all"))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"4.weight", "4.bias"}
    set_train_mode(model)
    assert not model[1].training


def test_new_timm_head_starts_at_zero_and_learns():
    model = _tiny()
    assert not model.classifier.weight.any() and not model.classifier.bias.any()
    model.train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))
    assert loss.item() == pytest.approx(torch.log(torch.tensor(3.0)).item(), abs=1e-5)
    loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0


def test_squeezenet_head_receives_a_gradient():
    torch.manual_seed(0)
    model = create_model(ModelConfig(model="squeezenet1_1"), num_classes=3).train()
    loss = nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([0, 1]))
    loss.backward()
    assert model.classifier[1].weight.grad.abs().sum() > 0


def test_googlenet_normalises_its_input_as_its_imagenet_weights_expect():
    model = create_model(ModelConfig(model="googlenet"), num_classes=4)
    assert model.transform_input is True and model.aux_logits is False
