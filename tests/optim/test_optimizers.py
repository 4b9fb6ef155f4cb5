"""Optimizer: parameter groups (no decay on 1-D/bias, frozen excluded) and the factory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import TINY_MODEL, apply_freeze
from tunecv.config import FinetuneConfig, ModelConfig, OptimConfig
from tunecv.errors import UserError
from tunecv.finetune.param_groups import build_param_groups
from tunecv.models.factory import create_model
from tunecv.models.layer_map import layer_map
from tunecv.optim.optimizers import CUDA_ONLY, OPTIMIZERS, create_optimizer


def _net() -> nn.Module:
    # conv (4-D weight + bias), BatchNorm (1-D weight + bias), linear (2-D weight + bias)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def _groups(net: nn.Module, weight_decay: float = 0.05, weight_decay_filter: str = "auto", **finetune):
    return build_param_groups(net, layer_map(net), FinetuneConfig(**finetune), lr=0.1, weight_decay=weight_decay,
                              weight_decay_filter=weight_decay_filter)


def test_param_groups_no_decay_on_1d_and_bias():
    net = _net()
    groups = _groups(net)
    decay = [g for g in groups if g["weight_decay"] == 0.05]
    no_decay = [g for g in groups if g["weight_decay"] == 0.0]
    assert _ids(p for g in decay for p in g["params"]) == _ids([net[0].weight, net[4].weight])
    assert _ids(p for g in no_decay for p in g["params"]) == _ids([net[0].bias, net[1].weight, net[1].bias,
                                                                   net[4].bias])


def test_param_groups_disable_decays_everything():
    net = _net()
    groups = _groups(net, weight_decay_filter="disable")
    assert {g["weight_decay"] for g in groups} == {0.05}
    assert _ids(p for g in groups for p in g["params"]) == _ids(net.parameters())


def test_param_groups_zero_decay_one_group():
    groups = _groups(_net(), weight_decay=0.0)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0


def test_param_groups_exclude_frozen():
    model = create_model(ModelConfig(model=TINY_MODEL), num_classes=3)
    apply_freeze(model, FinetuneConfig(freeze="all"))
    groups = _groups(model)
    assert _ids(p for g in groups for p in g["params"]) == {id(model.classifier.weight), id(model.classifier.bias)}


def _optimizer(net: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = build_param_groups(net, layer_map(net), FinetuneConfig(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                weight_decay_filter=cfg.weight_decay_filter)
    return create_optimizer(groups, cfg, cfg.lr)


@pytest.mark.parametrize("opt, nesterov", [("sgd", True), ("sgd", False), ("momentum", True)])
def test_sgd_nesterov(opt, nesterov):
    optimizer = _optimizer(_net(), OptimConfig(opt=opt, lr=0.1, momentum=0.8, use_nesterov=nesterov))
    assert type(optimizer) is torch.optim.SGD
    assert all(g["nesterov"] is nesterov and g["momentum"] == 0.8 and g["lr"] == 0.1
               for g in optimizer.param_groups)


def test_adamw_groups_keep_their_weight_decay():
    net = _net()
    optimizer = _optimizer(net, OptimConfig(opt="adamw", lr=0.01, weight_decay=0.05, eps=1e-6))
    assert type(optimizer) is torch.optim.AdamW
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    assert all(g["eps"] == 1e-6 for g in optimizer.param_groups)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(net.parameters()))


CPU_OPTIMIZERS = sorted(o for o in OPTIMIZERS if not o.startswith(tuple(CUDA_ONLY)))


@pytest.mark.parametrize("opt", CPU_OPTIMIZERS)
def test_every_registered_optimizer_builds_and_steps(opt):
    net = _net()
    optimizer = _optimizer(net, OptimConfig(opt=opt, lr=0.01))
    before = net[4].weight.detach().clone()
    for _ in range(2):  # ADOPT's first step only sets its second moment
        optimizer.zero_grad()
        net(torch.randn(2, 3, 8, 8)).sum().backward()
        optimizer.step()
    assert not torch.equal(net[4].weight, before)


def test_the_registry_holds_timm_s_optimizers_and_mindcv_s_names():
    assert len(CPU_OPTIMIZERS) >= 70 and {"lion", "lamb", "lars", "adan", "adopt", "nesterov", "sgd"} <= OPTIMIZERS


@pytest.mark.parametrize("opt", ["bnbadamw8bit", "fusedlamb"])
def test_cuda_only_optimizers_on_the_cpu_are_one_sentence(opt):
    with pytest.raises(UserError, match=rf"optimizer '{opt}' \(.*\) runs on CUDA only and this run is on cpu; "):
        _optimizer(_net(), OptimConfig(opt=opt))


def test_a_second_order_optimizer_is_refused_with_its_reason():
    with pytest.raises(UserError, match=r"optimizer 'adahessian' cannot be used: it needs a second-order backward"):
        _optimizer(_net(), OptimConfig(opt="adahessian"))


def test_unknown_optimizer():
    with pytest.raises(UserError, match=r"unknown optimizer 'adamx'; choose from the names in docs/config.md"):
        _optimizer(_net(), OptimConfig(opt="adamx"))


def test_everything_frozen():
    net = _net()
    for p in net.parameters():
        p.requires_grad = False
    with pytest.raises(UserError, match="no trainable parameters"):
        _optimizer(net, OptimConfig())
