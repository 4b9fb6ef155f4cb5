"""The run summary says what trains in each phase (words and counts, after its freeze list), the augmentation that
runs and the class weights the loss applies; its parts are pure functions of names, sizes and config sections."""

from __future__ import annotations

from dataclasses import replace

from conftest import prepared
from tunecv.config import DataConfig, LoaderConfig, load_config
from tunecv.finetune.phases import Phase
from tunecv.models.layer_map import LayerMap
from tunecv.report.summary import (
    augmentation_words,
    class_weight_words,
    count_words,
    phase_lines,
    share_words,
    warmup_words,
)

# a 3.37 M-parameter model: stem, two stages, a head group of conv_head and the 2,562-parameter classifier
STAGES = (("stem.w",), ("s1.w",), ("s2.w",), ("conv_head.w", "fc.w", "fc.b"))
LMAP = LayerMap(layers=STAGES, stages=STAGES, classifier=("fc.w", "fc.b"))
SIZES = {"stem.w": 864, "s1.w": 1_000_000, "s2.w": 2_000_000, "conv_head.w": 366_574, "fc.w": 2_560, "fc.b": 2}
ALL = frozenset(SIZES)


def test_counts_in_words():
    assert [count_words(n) for n in (771, 2_562, 999_999, 3_370_000, 86_600_000)] == \
        ["771", "2,562", "999,999", "3.37 M", "86.6 M"]
    assert share_words(2_562, 3_370_000) == "2,562 of 3.37 M"
    assert share_words(3_369_000, 3_370_000) == "3,369,000 of 3,370,000"  # rounding must not hide the frozen part


def test_one_phase_lines_say_what_trains():
    def line(frozen: set[str]) -> str:
        (only,) = phase_lines(SIZES, LMAP, [Phase(1, 10, frozenset(frozen))])
        return only

    assert line(set()) == "full: 3.37 M of 3.37 M parameters train"
    # freeze: all (strategy full in the config, yet only the head trains)
    assert line(ALL - {"fc.w", "fc.b"}) == "linear probe: 2,562 of 3.37 M parameters train (the head)"
    assert line({"stem.w", "s1.w", "s2.w"}) == \
        "head group: 369,136 of 3.37 M parameters train (the head and conv_head)"
    assert line({"stem.w", "s1.w"}) == \
        "partial: 2.37 M of 3.37 M parameters train (the top 1 of 3 stages and the head)"
    assert line({"s1.w"}) == "partial: 2.37 M of 3.37 M parameters train (2 of 3 stages and the head)"
    assert line({"fc.w", "fc.b"}) == "partial: 3,367,438 of 3,370,000 parameters train (the top 3 of 3 stages)"


def test_each_phase_of_a_gradual_plan_is_listed_with_its_epochs():
    phases = [Phase(1, 1, ALL - {"conv_head.w", "fc.w", "fc.b"}), Phase(2, 2, frozenset({"stem.w", "s1.w"})),
              Phase(3, 10, frozenset())]
    assert phase_lines(SIZES, LMAP, phases) == [
        "epoch 1 head group: 369,136 of 3.37 M parameters train (the head and conv_head)",
        "epoch 2 partial: 2.37 M of 3.37 M parameters train (the top 1 of 3 stages and the head)",
        "epochs 3-10 full: 3.37 M of 3.37 M parameters train"]


def test_augmentation_in_words():
    data, loader = DataConfig(), LoaderConfig()
    assert augmentation_words(data, loader) == \
        "random-resized crop (scale 0.08-1, ratio 0.75-1.33), hflip 0.5, colour jitter 0.4"
    randaug = replace(data, auto_augment="rand-m9-mstd0.5", re_prob=0.25)  # timm drops the jitter under it
    assert augmentation_words(randaug, loader) == ("random-resized crop (scale 0.08-1, ratio 0.75-1.33), hflip 0.5, "
                                                   "RandAugment rand-m9-mstd0.5, random erasing p=0.25")
    assert "colour jitter 0.4, AutoAugment 3a" in augmentation_words(replace(data, auto_augment="3a"), loader)
    assert augmentation_words(replace(data, no_aug=True, hflip=0.0), loader) == "none"
    assert augmentation_words(replace(data, no_aug=True), replace(loader, mixup=0.8, cutmix=1.0, cutmix_prob=0.5)) \
        == "evaluation crop + hflip 0.5 (no_aug), mixup alpha 0.8 / cutmix alpha 1 on 50% of batches"


def test_the_warm_up_said_is_the_one_the_schedule_runs(tmp_path):
    cfg = load_config(None, {"data_dir": str(tmp_path), "warmup_epochs": 5, "epoch_size": 1})
    assert warmup_words(cfg, 30) == "warm-up the whole run (30 steps; 150 were asked for)"
    cfg = load_config(None, {"data_dir": str(tmp_path), "warmup_epochs": 2, "epoch_size": 10})
    assert warmup_words(cfg, 30) == "warm-up 2 epochs"


def test_class_weights_in_words():
    assert class_weight_words(["major", "minor"], [0.55, 5.5]) == "major 0.55, minor 5.5"
    names = [f"c{i}" for i in range(20)]
    assert class_weight_words(names, [1.0] * 5 + [0.25] + [1.0] * 13 + [7.5]) == "0.25 (c5) to 7.5 (c19)"


def test_the_logged_summary_of_a_linear_probe(tiny_overrides):
    cfg = load_config(None, {**tiny_overrides, "freeze": "all", "class_weights": "auto",
                             "auto_augment": "rand-m9-mstd0.5", "re_prob": 0.25})
    run = prepared(cfg)
    run.plan.enter(1)
    summary = run.task.describe(run.run, run, run.plan).splitlines()
    head = sum(p.numel() for p in run.model.classifier.parameters())
    total = sum(p.numel() for p in run.model.parameters())
    assert f"  trains     linear probe: {head:,} of {total:,} parameters train (the head)" in summary
    assert "  augment    random-resized crop (scale 0.08-1, ratio 0.75-1.33), hflip 0.5, RandAugment " \
           "rand-m9-mstd0.5, random erasing p=0.25" in summary
    loss = next(line for line in summary if line.startswith("  loss "))
    assert "inverse-frequency class weights (circle 1, square 1, stripes 1)" in loss, loss
    assert not any("strategy full" in line for line in summary)
