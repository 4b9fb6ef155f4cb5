"""strategy: auto's decision (pure): the held-out split, the gains that count, the recipe each case gets, the table;
and the config rules and resolve step around it."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from tunecv.config import UserError, load_config
from tunecv.finetune import auto
from tunecv.finetune.auto import Measurement
from tunecv.resolve import Run, resolve_strategy, with_strategy

HELD = 100  # held-out images: one image is one point, so needed_gain is MIN_GAIN_POINTS


def _m(top1: float) -> Measurement:
    return Measurement("x", top1, 1.0)


def test_holdout_split_is_stratified_disjoint_and_complete():
    targets = [0] * 50 + [1] * 20 + [2] * 1
    fit, held = auto.holdout_split(targets, seed=3)
    assert not set(fit) & set(held)
    assert sorted(fit + held) == list(range(len(targets)))
    assert Counter(targets[i] for i in held) == {0: 10, 1: 4}  # a class of one image is never held out
    assert auto.holdout_split(targets, seed=3) == (fit, held)
    assert auto.holdout_split(targets, seed=4) != (fit, held)


def test_holdout_split_samples_large_sets_down_alike_per_class():
    targets = [0] * 9000 + [1] * 1000
    fit, held = auto.holdout_split(targets, max_images=1000)
    assert len(fit) + len(held) == 1000
    assert Counter(targets[i] for i in fit + held) == {0: 900, 1: 100}


def test_a_probe_right_but_for_one_image_leaves_no_room():
    assert not auto.probe_leaves_room(_m(99.0), HELD)
    assert auto.probe_leaves_room(_m(98.0), HELD)
    decision = auto.decide(_m(99.0), None, None, HELD, epochs=5, depths=(6, 5))
    assert decision.strategy == "linear_probe" and "no room" in decision.reason


def test_a_gain_under_a_point_or_an_image_keeps_the_probe():
    assert auto.needed_gain(100) == auto.MIN_GAIN_POINTS
    assert auto.needed_gain(20) == 5.0  # one image of 20
    decision = auto.decide(_m(90.0), _m(90.5), None, HELD, epochs=5, depths=(6, 5))
    assert decision.strategy == "linear_probe" and "+0.50" in decision.reason


def test_a_large_gain_of_the_top_stages_moves_every_layer_from_the_start():
    gain = auto.FULL_GAIN_POINTS
    decision = auto.decide(_m(80.0), _m(80.0 + gain), None, HELD, 5, (6, 5))
    assert decision.strategy == "full" and "far from ImageNet" in decision.reason
    assert not auto.moderate(_m(80.0), _m(80.0 + gain), HELD)


def test_a_moderate_gain_is_placed_by_the_top_stage_alone():
    probe, top_two = _m(80.0), _m(81.5)
    assert auto.moderate(probe, top_two, HELD)
    assert auto.decide(probe, top_two, _m(80.0), HELD, 5, (6, 5)).strategy == "lp_ft"  # the second stage counts
    assert auto.decide(probe, top_two, _m(80.0), HELD, 1, (6, 5)).strategy == "full"  # lp_ft needs two epochs
    assert auto.decide(probe, top_two, _m(81.0), HELD, 5, (6, 5)).strategy == "freeze:5"


def test_a_model_without_stages_to_split_gets_lp_ft_when_the_probe_leaves_room():
    assert auto.partial_depths(3) is None
    assert auto.partial_depths(9) == (6, 5)  # efficientnet: stem, 7 block stages, head group
    assert auto.decide(_m(80.0), None, None, HELD, 5, None).strategy == "lp_ft"


def test_the_table_starts_with_strategy_auto_and_ends_with_the_decision():
    decision = auto.Decision("freeze:5", "because")
    table = auto.decision_table(decision, [Measurement("linear probe", 94.77, 31.2)], fit=1150, held_out=287)
    lines = table.splitlines()
    assert lines[0].startswith("strategy auto: freeze:5, measured on 287 training images held out (1150")
    assert "94.77 %" in lines[2] and lines[-1] == "  decision: freeze:5: because"


@pytest.mark.parametrize("key, value", [("frozen_stages", 2), ("freeze", "all"), ("freeze_epochs", 1),
                                        ("freeze_patterns", ["blocks.0*"]), ("unfreeze_bn", "eval"),
                                        ("unfreeze_lr_scale", 0.1)])
def test_keys_auto_decides_are_refused_beside_it(key, value):
    with pytest.raises(UserError, match=f"strategy: auto decides which layers train, but {key} is set"):
        load_config(None, {"strategy": "auto", key: value, "data_dir": "x"})


def test_auto_expands_to_the_default_keys_and_is_accepted():
    cfg = load_config(None, {"strategy": "auto", "data_dir": "x"})
    assert (cfg.finetune.strategy, cfg.finetune.freeze, cfg.finetune.frozen_stages) == ("auto", "none", -1)
    assert with_strategy(cfg, "linear_probe").finetune.freeze == "all"
    assert with_strategy(cfg, "freeze:5").finetune.frozen_stages == 5


def test_detection_refuses_auto_as_it_refuses_every_strategy():
    with pytest.raises(UserError, match="strategy is a key of classification"):
        load_config(None, {"task": "detection", "strategy": "auto", "data_dir": "x"})


def test_a_resumed_run_keeps_its_choice_and_measures_nothing():
    cfg = load_config(None, {"strategy": "auto", "data_dir": "x"})
    run = Run(cfg, ("a", "b"), (), checkpoint={"config": {"strategy": "freeze:5"}})
    assert resolve_strategy(run, lambda *_: pytest.fail("measured again")) == "freeze:5"


def test_a_command_that_cannot_measure_says_so():
    cfg = load_config(None, {"strategy": "auto", "data_dir": "x"})
    with pytest.raises(UserError, match="strategy: auto is measured when finetune.py trains"):
        resolve_strategy(Run(cfg, ("a", "b"), ()), None)


def test_the_measurements_get_the_runs_scaled_lr_or_a_usual_one_for_lr_auto():
    seen = SimpleNamespace(lr=None)

    def measure(run, lr):
        seen.lr = lr
        return "full"

    cfg = load_config(None, {"strategy": "auto", "data_dir": "x", "lr": 0.1, "batch_size": 64,
                             "auto_scale_lr": {"base_batch_size": 256}})
    resolve_strategy(Run(cfg, ("a", "b"), ()), measure)
    assert seen.lr == pytest.approx(0.025)
    cfg = load_config(None, {"strategy": "auto", "data_dir": "x", "lr": "auto", "opt": "sgd"})
    resolve_strategy(Run(cfg, ("a", "b"), ()), measure)
    assert seen.lr == 0.01


def test_too_few_held_out_images_decide_nothing_and_say_so():
    decision = auto.too_few(4)
    assert decision.strategy == "linear_probe" and f"({auto.MIN_HELD_OUT} needed)" in decision.reason


def test_a_model_that_cannot_be_split_says_why_in_the_decision():
    decision = auto.decide(_m(80.0), None, None, HELD, 5, (12, 11), unsplit="the model adds pos_embed")
    assert decision.strategy == "lp_ft" and "(the model adds pos_embed)" in decision.reason
