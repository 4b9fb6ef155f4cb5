"""The unfrozen phases' defaults: lp_ft and gradual keep the pretrained BatchNorm statistics of the layers that
unfreeze (unfreeze_bn: eval) and train them at fastai's slice (unfreeze_head_lr_scale, unfreeze_lr_scale); the keys
the strategies set, and what the train mode, the optimizer and the phase log do with them."""

from __future__ import annotations

import logging

import pytest
import timm
import torch
from torch import nn

from conftest import TINY_MODEL, plan_for, write_yaml
from tunecv.config import FinetuneConfig, load_config
from tunecv.errors import UserError
from tunecv.finetune.phases import Phase, apply_phase, best_before_unfreeze, plan_phases
from tunecv.finetune.strategies import STRATEGY_KEYS, strategy_keys
from tunecv.models.factory import set_train_mode
from tunecv.models.layer_map import layer_map
from tunecv.train.loop import FitResult
from tunecv.train.state import Best


@pytest.fixture(scope="module")
def effnet() -> nn.Module:
    return timm.create_model(TINY_MODEL, pretrained=False, num_classes=3)


def _norms(model: nn.Module, *prefixes: str) -> set[str]:
    """BatchNorm module names, under `prefixes` when given."""
    return {name for name, module in model.named_modules() if isinstance(module, nn.BatchNorm2d)
            and (not prefixes or any(name == p or name.startswith(f"{p}.") for p in prefixes))}


def _strategy(name: str, **keys) -> FinetuneConfig:
    return FinetuneConfig(**{**strategy_keys(name), "strategy": name, **keys})


# ---------------------------------------------------------------------------------------------- strategy keys

def test_lp_ft_and_gradual_keep_the_pretrained_norm_statistics():
    defaults = FinetuneConfig()
    assert STRATEGY_KEYS == {key: getattr(defaults, key) for key in STRATEGY_KEYS}  # no strategy: the defaults
    safely = {"unfreeze_lr_scale": 0.01, "unfreeze_head_lr_scale": 0.5, "unfreeze_bn": "eval"}  # fastai's slice
    assert strategy_keys("lp_ft") == {**STRATEGY_KEYS, "freeze_epochs": 1, **safely}
    assert strategy_keys("gradual") == {**STRATEGY_KEYS, **safely}
    for name in ("full", "linear_probe", "freeze:2"):
        assert {k: strategy_keys(name)[k] for k in safely} == {k: STRATEGY_KEYS[k] for k in safely}


def test_strategy_keys_reach_the_config_and_give_way_to_the_user(tmp_path):
    data = str(tmp_path)
    ft = load_config(None, {"data_dir": data, "strategy": "lp_ft"}).finetune
    assert (ft.unfreeze_bn, ft.unfreeze_lr_scale, ft.unfreeze_head_lr_scale) == ("eval", 0.01, 0.5)
    old = {"unfreeze_bn": "train", "unfreeze_lr_scale": 1, "unfreeze_head_lr_scale": 1}  # the defaults before
    ft = load_config(None, {"data_dir": data, "strategy": "lp_ft", **old}).finetune
    assert (ft.unfreeze_bn, ft.unfreeze_lr_scale, ft.unfreeze_head_lr_scale) == ("train", 1.0, 1.0)
    # a later strategy replaces them (full unfreezes nothing: keeping lp_ft's would be an error)
    saved = write_yaml(tmp_path / "lp_ft.yaml", {"data_dir": data, "strategy": "lp_ft", "unfreeze_lr_scale": 0.01,
                                                 "unfreeze_head_lr_scale": 0.5, "unfreeze_bn": "eval"})
    ft = load_config(saved, {"strategy": "full"}).finetune
    assert (ft.freeze_epochs, ft.unfreeze_bn, ft.unfreeze_lr_scale, ft.unfreeze_head_lr_scale) == (0, "train", 1, 1)
    with pytest.raises(UserError, match="unfreeze_bn"):
        load_config(None, {"data_dir": data, "strategy": "lp_ft", "unfreeze_bn": "frozen"})


# ----------------------------------------------------------------------------------------------- plan_phases

def test_lp_ft_keeps_every_norm_of_the_unfrozen_backbone_in_eval(effnet):
    first, second = plan_phases(effnet, layer_map(effnet), _strategy("lp_ft"), 3)
    assert first.norm_eval == frozenset()  # frozen: freeze_bn already keeps them in eval mode
    assert second.norm_eval == _norms(effnet) and len(second.norm_eval) > 10


def test_norms_frozen_all_run_are_left_to_freeze_bn(effnet):
    phases = plan_phases(effnet, layer_map(effnet), _strategy("lp_ft", frozen_stages=1), 3)
    assert phases[1].norm_eval == _norms(effnet) - _norms(effnet, "bn1", "blocks.0")


def test_gradual_keeps_each_stage_s_norms_once_it_unfreezes(effnet):
    phases = plan_phases(effnet, layer_map(effnet), _strategy("gradual"), 4)
    assert phases[0].norm_eval == frozenset()
    # bn2 is in the head group, which trains from the first epoch: its statistics move from the start
    assert phases[-1].norm_eval == _norms(effnet) - {"bn2"}
    for before, after in zip(phases, phases[1:]):
        assert before.norm_eval <= after.norm_eval
        trainable = {n for n, _ in effnet.named_parameters() if n not in after.frozen}
        assert all(f"{name}.weight" in trainable for name in after.norm_eval)


def test_unfreeze_bn_train_keeps_none(effnet):
    phases = plan_phases(effnet, layer_map(effnet), _strategy("lp_ft", unfreeze_bn="train"), 3)
    assert all(phase.norm_eval == frozenset() for phase in phases)


@pytest.mark.parametrize("keys", [{"strategy": "full"}, {"strategy": "linear_probe", "freeze": "all"}])
@pytest.mark.parametrize("key, value", [("unfreeze_bn", "eval"), ("unfreeze_head_lr_scale", 0.5)])
def test_unfreeze_keys_without_an_unfreeze_are_user_errors(effnet, keys, key, value):
    with pytest.raises(UserError, match=f"{key} applies to layers that unfreeze"):
        plan_phases(effnet, layer_map(effnet), FinetuneConfig(**keys, **{key: value}), 3)


@pytest.mark.parametrize("value", [0, -0.5, 1.5])
def test_unfreeze_head_lr_scale_out_of_range_is_user_error(effnet, value):
    with pytest.raises(UserError, match=r"unfreeze_head_lr_scale must be in \(0, 1\]"):
        plan_phases(effnet, layer_map(effnet), _strategy("lp_ft", unfreeze_head_lr_scale=value), 3)


# -------------------------------------------------------------------------------------------- train mode

def test_kept_norms_train_their_weights_but_not_their_statistics():
    model = timm.create_model(TINY_MODEL, pretrained=False, num_classes=3)
    phases = plan_phases(model, layer_map(model), _strategy("lp_ft"), 2)
    apply_phase(model, phases[1])
    kept = [model.get_submodule(name) for name in sorted(phases[1].norm_eval)]
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in kept]
    set_train_mode(model, keep_frozen_eval=True, keep_eval=kept)
    assert model.training and model.classifier.training and not any(m.training for m in kept)
    model(torch.randn(4, 3, 32, 32) * 3 + 1).logsumexp(1).sum().backward()
    for module, (mean, var) in zip(kept, before):
        assert torch.equal(module.running_mean, mean) and torch.equal(module.running_var, var)
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0
    set_train_mode(model, keep_frozen_eval=True)  # unfreeze_bn: train: every trainable norm in train mode
    assert all(m.training for m in kept)


def test_lp_ft_unfrozen_phase_trains_at_fastai_s_slice_and_logs_it(tiny_overrides, caplog):
    cfg = load_config(None, {**tiny_overrides, "strategy": "lp_ft", "epoch_size": 2})
    model = timm.create_model(TINY_MODEL, pretrained=False, num_classes=3)
    plan = plan_for(cfg, model, steps=2, lr=0.01)
    with caplog.at_level(logging.INFO, logger="tunecv.finetune.phases"):
        first, _ = plan.enter(1)
        second, _ = plan.enter(2)
    lrs = {name: g["lr"] for g in second.param_groups for name in g["param_names"]}
    assert {g["lr"] for g in first.param_groups} == {0.01}  # the head alone, at lr
    assert lrs["classifier.weight"] == pytest.approx(0.01 / 2)  # then slice(lr/2/100, lr/2)
    assert lrs["conv_stem.weight"] == pytest.approx(0.01 / 2 / 100)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "tunecv.finetune.phases")
    assert f"BatchNorm of {len(_norms(model))} unfrozen layers keeps its pretrained statistics (unfreeze_bn: eval)" \
        in logged
    assert "5e-05-0.0" in logged  # the table's lr range of the layers below the head group


def _rows(*top1):
    return [{"epoch": epoch, "top1": value} for epoch, value in enumerate(top1, start=1)]


LP_FT = [Phase(1, 1, frozenset({"backbone"}), label="classifier only"), Phase(2, 4, frozenset(), True, True)]


def test_summary_says_when_the_head_only_epoch_stays_best():
    note = best_before_unfreeze(LP_FT, _rows(95.42, 94.12, 94.77, 94.12), best_epoch=1, metric="top1")
    assert "epoch 1 (classifier only) scored best" in note and "peaked at 94.77" in note


@pytest.mark.parametrize("phases, best_epoch", [(LP_FT, 3), (LP_FT[:1], 1)])
def test_summary_says_nothing_when_the_unfreeze_helped_or_never_came(phases, best_epoch):
    assert best_before_unfreeze(phases, _rows(90.0, 91.0, 93.0, 92.0), best_epoch, "top1") == ""


def test_summary_says_nothing_before_an_unfrozen_epoch_is_scored():
    assert best_before_unfreeze(LP_FT, [*_rows(95.0), {"epoch": 2, "top1": None}], 1, "top1") == ""


def test_summary_says_nothing_when_the_unfrozen_epochs_tie_the_head_only_one():
    assert best_before_unfreeze(LP_FT, _rows(100.0, 100.0, 100.0), best_epoch=1, metric="top1") == ""


def test_the_run_summary_carries_the_note():
    note = best_before_unfreeze(LP_FT, _rows(95.42, 94.12), best_epoch=1, metric="top1")
    result = FitResult("top1", _rows(95.42, 94.12), Best(95.42, 1, "run/m_best.pth"), "run/m_last.pth",
                       "run/results.txt", 3.0, phase_note=note)
    lines = result.summary().splitlines()
    assert lines[2] == note and lines[-1] == "  results: run/results.txt"
