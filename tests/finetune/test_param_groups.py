"""Parameter groups: lr multipliers (lr_scales first match, head_lr_scale, layer_decay, unfreeze_lr_scale),
MMPretrain's paramwise_cfg, weight decay filters, frozen parameters, the group table and the plan's optimizers."""

from __future__ import annotations

import pytest
import timm
from torch import nn

from conftest import TINY_MODEL, apply_freeze, plan_for
from tunecv.config import FinetuneConfig, OptimConfig, load_config
from tunecv.config.rules import check_paramwise_cfg
from tunecv.errors import UserError
from tunecv.finetune.param_groups import build_param_groups, build_rules, group_table
from tunecv.models.factory import create_model
from tunecv.models.layer_map import layer_map
from tunecv.optim.optimizers import base_lr, create_optimizer

LR, WD = 0.1, 0.05
# test_efficientnet's 7 layers: stem, blocks.0 .. blocks.4, head group (conv_head, bn2, classifier)
LAYER_PREFIXES = [("conv_stem", "bn1"), *((f"blocks.{i}",) for i in range(5)), ("conv_head", "bn2", "classifier")]


def _model() -> nn.Module:
    return timm.create_model(TINY_MODEL, pretrained=False, num_classes=3)


def _groups(model: nn.Module, weight_decay_filter: str = "auto", discriminative: bool = False, **keys):
    return build_param_groups(model, layer_map(model), FinetuneConfig(**keys), lr=LR, weight_decay=WD,
                              weight_decay_filter=weight_decay_filter, discriminative=discriminative)


def _per_param(groups, field: str) -> dict[str, float]:
    return {name: g[field] for g in groups for name in g["param_names"]}


def _layer(name: str) -> int:
    return next(i for i, prefixes in enumerate(LAYER_PREFIXES)
                if any(name == p or name.startswith(f"{p}.") for p in prefixes))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _model()


def test_default_one_lr_and_group_shape(model):
    groups = _groups(model)
    lrs = _per_param(groups, "lr")
    assert set(lrs) == {n for n, _ in model.named_parameters()}
    assert set(lrs.values()) == {LR}
    for g in groups:
        assert len(g["params"]) == len(g["param_names"]) and g["lr"] == LR * g["lr_scale"]
        assert {"name", "weight_decay"} <= set(g)


def test_lr_scales_first_match_wins(model):
    lrs = _per_param(_groups(model, lr_scales={"classifier": 2.0, "re:.*": 3.0}), "lr")
    assert lrs.pop("classifier.weight") == pytest.approx(2 * LR) and lrs.pop("classifier.bias") == pytest.approx(2 * LR)
    assert lrs and all(lr == pytest.approx(3 * LR) for lr in lrs.values())
    # the other order: the catch-all comes first and takes the classifier too
    lrs = _per_param(_groups(model, lr_scales={"re:.*": 3.0, "classifier": 2.0}), "lr")
    assert all(lr == pytest.approx(3 * LR) for lr in lrs.values())


def test_lr_scales_patterns(model):
    lrs = _per_param(_groups(model, lr_scales={"blocks.4": 1.5, "blocks.[0-1]*": 0.5}), "lr")
    for name, lr in lrs.items():
        expected = 1.5 if name.startswith("blocks.4.") else 0.5 if name.startswith(("blocks.0.", "blocks.1.")) else 1
        assert lr == pytest.approx(expected * LR), name


def test_lr_scales_pattern_matching_nothing_is_user_error(model):
    with pytest.raises(UserError, match="lr_scales"):
        _groups(model, lr_scales={"classifer": 2.0})


def test_head_lr_scale(model):
    lrs = _per_param(_groups(model, head_lr_scale=10.0), "lr")
    for name, lr in lrs.items():
        assert lr == pytest.approx(10 * LR if name.startswith("classifier.") else LR), name
    # it multiplies a matching lr_scales rule
    lrs = _per_param(_groups(model, head_lr_scale=10.0, lr_scales={"classifier": 2.0}), "lr")
    assert lrs["classifier.weight"] == pytest.approx(20 * LR)


def test_layer_decay(model):
    decay = 0.5
    lrs = _per_param(_groups(model, layer_decay=decay), "lr")
    layers = len(LAYER_PREFIXES)
    assert lrs["conv_stem.weight"] == pytest.approx(LR * decay ** (layers - 1))
    for name, lr in lrs.items():
        assert lr == pytest.approx(LR * decay ** (layers - 1 - _layer(name))), name
    for name in ("conv_head.weight", "bn2.weight", "classifier.weight", "classifier.bias"):
        assert lrs[name] == pytest.approx(LR)


def test_unfreeze_lr_scale_only_when_discriminative(model):
    scale = 0.1
    lrs = _per_param(_groups(model, unfreeze_lr_scale=scale, discriminative=True), "lr")
    last = len(LAYER_PREFIXES) - 1
    assert lrs["conv_stem.weight"] == pytest.approx(LR * scale)  # fastai's slice(lr * scale, lr)
    assert lrs["classifier.weight"] == pytest.approx(LR)
    for name, lr in lrs.items():  # geometric in between
        assert lr == pytest.approx(LR * scale ** ((last - _layer(name)) / last)), name
    assert set(_per_param(_groups(model, unfreeze_lr_scale=scale), "lr").values()) == {LR}


def test_unfreeze_head_lr_scale_lowers_the_whole_slice(model):
    """fastai fine_tune after the unfreeze: slice(lr/2 * 0.01, lr/2)."""
    lrs = _per_param(_groups(model, unfreeze_lr_scale=0.01, unfreeze_head_lr_scale=0.5, discriminative=True), "lr")
    last = len(LAYER_PREFIXES) - 1
    assert lrs["classifier.weight"] == pytest.approx(LR * 0.5)
    assert lrs["conv_stem.weight"] == pytest.approx(LR * 0.5 * 0.01)
    for name, lr in lrs.items():
        assert lr == pytest.approx(LR * 0.5 * 0.01 ** ((last - _layer(name)) / last)), name
    assert set(_per_param(_groups(model, unfreeze_head_lr_scale=0.5), "lr").values()) == {LR}  # before it


def test_weight_decay_filters(model):
    auto = _per_param(_groups(model), "weight_decay")
    for name, param in model.named_parameters():
        assert auto[name] == (0.0 if param.ndim <= 1 else WD), name
    disable = _per_param(_groups(model, weight_decay_filter="disable"), "weight_decay")
    assert set(disable.values()) == {WD}


def test_paramwise_custom_keys_substring_longest_first(model):
    custom = {"blocks": {"lr_mult": 2.0}, "blocks.1": {"lr_mult": 5.0, "decay_mult": 0.5},
              "conv_pw": {"lr_mult": 7.0}}
    groups = _groups(model, paramwise_cfg={"custom_keys": custom})
    lrs, wds = _per_param(groups, "lr"), _per_param(groups, "weight_decay")
    params = dict(model.named_parameters())
    for name, lr in lrs.items():
        if name.startswith("blocks.1."):  # the longer key wins over "blocks"
            assert lr == pytest.approx(5 * LR), name
            assert wds[name] == (pytest.approx(0.5 * WD) if params[name].ndim > 1 else 0.0), name
        elif "conv_pw" in name:  # substring anywhere in the name (blocks.3.0.conv_pw.weight); longer than "blocks"
            assert lr == pytest.approx(7 * LR), name
        elif name.startswith("blocks."):
            assert lr == pytest.approx(2 * LR), name
            assert wds[name] == (WD if params[name].ndim > 1 else 0.0), name
        else:
            assert lr == pytest.approx(LR), name
    assert any("conv_pw" in n for n in lrs)


def test_lr_scales_come_before_custom_keys(model):
    rules = build_rules(FinetuneConfig(lr_scales={"classifier": 3.0},
                                       paramwise_cfg={"custom_keys": {"c": {"lr_mult": 9.0}, "cls": {}}}))
    assert [r.pattern for r in rules] == ["classifier", "re:cls", "re:c"]
    lrs = _per_param(_groups(model, lr_scales={"classifier": 3.0},
                             paramwise_cfg={"custom_keys": {"classifier": {"lr_mult": 9.0}}}), "lr")
    assert lrs["classifier.weight"] == pytest.approx(3 * LR)


def test_paramwise_norm_and_bias_decay_mult_follow_mmengine(model):
    groups = _groups(model, paramwise_cfg={"norm_decay_mult": 0.5, "bias_decay_mult": 0.25})
    wds = _per_param(groups, "weight_decay")
    # norm layers' weight and bias take norm_decay_mult; other biases bias_decay_mult
    assert wds["bn1.weight"] == pytest.approx(0.5 * WD) and wds["bn1.bias"] == pytest.approx(0.5 * WD)
    assert wds["classifier.bias"] == pytest.approx(0.25 * WD)
    assert wds["conv_stem.weight"] == WD and wds["classifier.weight"] == WD
    # one multiplier given: the other is 1, whatever weight_decay_filter says (MMEngine's defaults)
    wds = _per_param(_groups(model, paramwise_cfg={"norm_decay_mult": 0.0}), "weight_decay")
    assert wds["bn1.weight"] == 0.0 and wds["bn1.bias"] == 0.0 and wds["classifier.bias"] == WD


def test_paramwise_custom_keys_are_exempt_from_norm_and_bias_mults(model):
    wds = _per_param(_groups(model, paramwise_cfg={"custom_keys": {"classifier": {"lr_mult": 10}},
                                                   "bias_decay_mult": 0.0}), "weight_decay")
    assert wds["classifier.bias"] == WD and wds["conv_stem.weight"] == WD


def test_frozen_parameters_get_no_group():
    model = _model()
    apply_freeze(model, FinetuneConfig(freeze="all"))
    groups = _groups(model, lr_scales={"classifier": 2.0})
    assert sorted(n for g in groups for n in g["param_names"]) == ["classifier.bias", "classifier.weight"]
    assert all(p.requires_grad for g in groups for p in g["params"])
    optimizer = create_optimizer(groups, OptimConfig(), LR)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2


@pytest.mark.parametrize("cfg, message", [
    ({"bias_lr_mult": 2}, "bias_lr_mult not supported"),
    ({"custom_keys": {"head": {"lr": 2}}}, "custom_keys.head"),
    ({"custom_keys": {"head": {"lr_mult": -1}}}, "custom_keys.head"),
    ({"custom_keys": ["head"]}, "custom_keys must map"),
    ({"norm_decay_mult": -0.5}, "norm_decay_mult must be a number >= 0"),
    ({"bias_decay_mult": True}, "bias_decay_mult must be a number >= 0"),
])
def test_check_paramwise_cfg_rejects(cfg, message):
    with pytest.raises(UserError, match=message):
        check_paramwise_cfg(cfg)


def test_check_paramwise_cfg_accepts():
    check_paramwise_cfg({"custom_keys": {"head.fc": {"lr_mult": 10, "decay_mult": 0.0}}, "norm_decay_mult": 0,
                         "bias_decay_mult": 1.5})


def _table_rows(table: str) -> dict[str, list[str]]:
    lines = table.splitlines()
    assert lines[0].split() == ["group", "tensors", "params", "peak", "lr", "weight_decay", "frozen"]
    rows = {}
    for line in lines[1:]:
        name, *cells = line.strip().rsplit(maxsplit=5)
        rows[name.strip()] = cells
    return rows


def test_group_table_with_frozen_row():
    model = _model()
    apply_freeze(model, FinetuneConfig(freeze="all"))
    rows = _table_rows(group_table(model, _groups(model, lr_scales={"classifier": 2.0})))
    total_tensors = len(list(model.parameters()))
    frozen_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("classifier."))
    assert rows["frozen"] == [str(total_tensors - 2), f"{frozen_params:,}", "-", "-", "yes"]
    weight = model.classifier.weight
    assert rows["classifier x2"] == ["1", f"{weight.numel():,}", "0.2", "0.05", "no"]
    assert rows["classifier x2, no decay"] == ["1", "3", "0.2", "0", "no"]
    assert len(rows) == 3


def test_group_table_folds_layers_into_one_row(model):
    rows = _table_rows(group_table(model, _groups(model, layer_decay=0.5)))
    assert "frozen" not in rows
    low, high = rows["layers"][2].split("-")
    assert float(low) == pytest.approx(LR * 0.5 ** 6, rel=0.05) and float(high) == pytest.approx(LR * 0.5)
    assert sum(int(cells[0]) for cells in rows.values()) == len(list(model.parameters()))
    assert sum(int(cells[1].replace(",", "")) for cells in rows.values()) == sum(p.numel() for p in model.parameters())


def test_group_table_shows_every_weight_decay(model):
    groups = _groups(model, paramwise_cfg={"norm_decay_mult": 0.5, "bias_decay_mult": 0.0})
    assert {g["weight_decay"] for g in groups} == {WD, 0.5 * WD, 0.0}
    rows = _table_rows(group_table(model, groups))
    assert {float(cells[3]) for cells in rows.values()} == {WD, 0.5 * WD, 0.0}


def test_base_lr_with_a_zero_lr_mult_on_the_first_group(model):
    groups = _groups(model, paramwise_cfg={"custom_keys": {"conv_stem": {"lr_mult": 0.0}}})
    optimizer = create_optimizer(groups, OptimConfig(), LR)
    assert base_lr(optimizer) == pytest.approx(LR)


# ----------------------------------------------------------------------------------------------------- plan

def test_plan_phases_bring_their_own_optimizer(tiny_overrides):
    cfg = load_config(None, {**tiny_overrides, "epoch_size": 3, "freeze_epochs": 1, "unfreeze_lr_scale": 0.1,
                             "scheduler": "cosine_decay", "min_lr": 0.0})
    model = create_model(cfg.model, num_classes=3)
    plan = plan_for(cfg, model, steps=2, lr=0.01)
    first, first_scheduler = plan.enter(1)
    assert sorted(n for g in first.param_groups for n in g["param_names"]) == ["classifier.bias", "classifier.weight"]
    assert sum(p.requires_grad for p in model.parameters()) == 2
    for _ in range(2):
        first.step()
        first_scheduler.step()
    second, _ = plan.enter(2)
    assert second is not first and all(p.requires_grad for p in model.parameters())
    assert sum(len(g["params"]) for g in second.param_groups) == len(list(model.parameters()))
    lrs = _per_param(second.param_groups, "lr")
    # the schedule restarted (cosine at its first step: the peak) and unfreeze_lr_scale spreads it over the layers
    assert lrs["classifier.weight"] == pytest.approx(0.01)
    assert lrs["conv_stem.weight"] == pytest.approx(0.01 * 0.1)
    assert base_lr(second) == pytest.approx(0.01)
    assert plan.enter(3)[0] is second  # same phase, same optimizer
    assert "frozen" not in _table_rows(plan.table) and plan.trainable == sum(p.numel() for p in model.parameters())
