"""Calibration: ECE from reliability bins, temperature scaling recovers a known temperature, and the fitted
temperature is stored in .pth and .safetensors checkpoints without breaking them."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tunecv.report.calibration import calibrated_top1, fit_temperature, nll, reliability_bins
from tunecv.train.checkpoint import SAVE_ID, load_checkpoint, save_checkpoint, save_safetensors, update_checkpoint


def test_ece_is_the_weighted_gap_between_confidence_and_accuracy():
    honest = reliability_bins([0.8] * 10, [True] * 8 + [False] * 2)
    assert honest.ece == pytest.approx(0.0)
    # half the images at 0.9 but right half the time (gap 0.4), half at 0.6 and right 60 % (gap 0)
    mixed = reliability_bins([0.9] * 10 + [0.6] * 10, [True] * 5 + [False] * 5 + [True] * 6 + [False] * 4)
    assert mixed.ece == pytest.approx(20.0)
    assert sum(mixed.counts) == 20 and math.isnan(mixed.accuracy[0])


def test_confidence_one_lands_in_the_last_bin():
    bins = reliability_bins([1.0, 0.0], [True, False], bins=10)
    assert bins.counts[-1] == 1 and bins.counts[0] == 1


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    generator = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4000, 5, generator=generator) * 2
    targets = torch.multinomial(true_logits.softmax(dim=1), 1, generator=generator).squeeze(1)
    overconfident = true_logits * 3  # a model whose logits are 3x too sharp
    temperature = fit_temperature(overconfident, targets)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert nll(overconfident, targets, temperature) < nll(overconfident, targets, 1.0)
    before = reliability_bins(*_top1_and_hits(overconfident, targets, 1.0)).ece
    after = reliability_bins(*_top1_and_hits(overconfident, targets, temperature)).ece
    assert after < before / 2
    _, classes = calibrated_top1(overconfident, temperature)
    assert classes == overconfident.argmax(dim=1).tolist()  # top-1 never changes


def _top1_and_hits(logits, targets, temperature):
    confidences, classes = calibrated_top1(logits, temperature)
    return confidences, [c == t for c, t in zip(classes, targets.tolist())]


def test_fit_temperature_works_on_inference_mode_logits():
    with torch.inference_mode():
        logits = torch.randn(50, 3) * 4
    assert 0.01 <= fit_temperature(logits, torch.randint(0, 3, (50,))) <= 100


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_temperature_stored_in_the_checkpoint(tmp_path, suffix):
    path = tmp_path / f"m_best{suffix}"
    payload = {"model": {"w": torch.ones(2)}, "config": {"model": "m"}, "classes": ["a", "b"], "epoch": 3}
    (save_checkpoint if suffix == ".pth" else save_safetensors)(payload, path)
    save_id = json.loads(path.with_suffix(".json").read_text()).get(SAVE_ID) if suffix == ".safetensors" else None
    update_checkpoint(path, {"temperature": 1.7})
    if save_id is not None:  # the pair still belongs together
        assert json.loads(path.with_suffix(".json").read_text())[SAVE_ID] == save_id
    loaded = load_checkpoint(path)
    assert loaded["temperature"] == 1.7 and loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], torch.ones(2))


def test_calibrate_refuses_a_split_without_errors(caplog):
    from tunecv.inference.validate import _can_calibrate
    from tunecv.train.engine import EvalResult

    def result(predictions):
        return EvalResult(loss=0.1, top1=100.0, top5=100.0, topk=2, images=len(predictions), seconds=1.0,
                          predictions=predictions, scores=[0.9] * len(predictions), targets=[0, 1, 1])

    assert not _can_calibrate(result([0, 1, 1]), "val")
    assert "every val image is right" in caplog.text and "unchanged" in caplog.text
    assert _can_calibrate(result([0, 0, 1]), "val")
    assert not _can_calibrate(EvalResult(0.0, 0.0, 0.0, 1, 0, 0.0), "val")
