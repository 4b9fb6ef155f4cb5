"""LR range test: the suggestion on synthetic loss curves, the smoothing, a real range test that leaves the model as
it was, and the plot."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import prepared
from tunecv.config import load_config
from tunecv.train.lr_find import END_LR, START_LR, LRFindResult, exponential_lrs, lr_find, plot, smoothed, valley

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _curve(flat: int, descent: int, rise: int, flat_slope: float = 0.0) -> list[float]:
    """A range-test shape: a (nearly) flat start, a descent from 2.3 to 0.5, then divergence up to 5."""
    losses = [2.3 - flat_slope * i for i in range(flat)]
    top = losses[-1] if losses else 2.3
    losses += [top - (top - 0.5) * (i + 1) / descent for i in range(descent)]
    losses += [0.5 + 4.5 * (i + 1) / rise for i in range(rise)]
    return losses


def test_exponential_lrs():
    lrs = exponential_lrs(9)
    assert len(lrs) == 9 and lrs[0] == START_LR and lrs[-1] == pytest.approx(END_LR)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert all(r == pytest.approx(ratios[0]) for r in ratios) and ratios[0] > 1
    assert exponential_lrs(3, 1e-3, 1e-1) == pytest.approx([1e-3, 1e-2, 1e-1])
    assert exponential_lrs(1) == [START_LR]


@pytest.mark.parametrize("flat, descent, rise, slope", [(30, 40, 30, 0.0), (60, 30, 10, 1e-5), (0, 50, 20, 0.0)])
def test_valley_lies_inside_the_descent(flat, descent, rise, slope):
    losses = _curve(flat, descent, rise, slope)
    lrs = exponential_lrs(len(losses))
    suggestion = valley(lrs, losses)
    index = lrs.index(suggestion)
    lowest = min(range(len(losses)), key=losses.__getitem__)
    assert lowest == flat + descent - 1
    assert flat < index < lowest  # inside the descent, not in the flat start, below the minimum's lr
    assert suggestion < lrs[lowest]
    # past the start of the descent: fastai's "valley", about a third to a half of the way down
    assert flat + descent // 4 <= index <= flat + 3 * descent // 4


def test_valley_ignores_a_long_exactly_monotone_flat_start():
    """A zero-initialised head gives a long, strictly decreasing but flat start; it must not drag the
    suggestion into the flat part (the longest decreasing run would start at step 0)."""
    losses = _curve(60, 30, 10, flat_slope=1e-6)
    assert all(b < a for a, b in zip(losses[:90], losses[1:90]))  # one decreasing run from step 0 to the minimum
    lrs = exponential_lrs(len(losses))
    assert lrs.index(valley(lrs, losses)) > 60


@pytest.mark.parametrize("losses", [[1.0] * 10, [float(i) for i in range(10)]])
def test_valley_without_a_descent_returns_the_first_lr(losses):
    lrs = exponential_lrs(len(losses))
    assert valley(lrs, losses) == lrs[0]


def test_smoothed_is_bias_corrected():
    assert smoothed([2.5] * 50) == pytest.approx([2.5] * 50, rel=1e-12)
    assert smoothed([7.0])[0] == pytest.approx(7.0)  # not 7 * (1 - beta)
    values = smoothed([1.0] * 10 + [0.0] * 10, beta=0.9)
    assert values[9] == pytest.approx(1.0)
    assert all(b < a for a, b in zip(values[9:], values[10:]))  # the moving average lags the drop
    assert 0 < values[-1] < 1
    assert smoothed([]) == []


@pytest.mark.parametrize("strategy", ["full", "linear_probe"])
def test_lr_find_restores_every_tensor(tiny_overrides, strategy):
    steps = 10
    cfg = load_config(None, {**tiny_overrides, "lr_find_steps": steps, "strategy": strategy})
    setup = prepared(cfg)
    model = setup.model
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert any(k.endswith("num_batches_tracked") for k in before)
    optimizer, _ = setup.plan.start(setup.plan.phases[0])
    result = lr_find(model, setup.train_loader, optimizer, setup.trainer, steps)

    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), key
    # it did train: every trainable tensor has optimizer state, one step per lr tried
    states = [optimizer.state[p] for g in optimizer.param_groups for p in g["params"]]
    assert states and all(int(s["step"]) == len(result.lrs) for s in states)
    assert all(p.grad is None for p in model.parameters())

    assert 3 <= len(result.lrs) <= steps and len(result.losses) == len(result.lrs)
    assert result.lrs == pytest.approx(exponential_lrs(steps)[:len(result.lrs)])
    assert math.isfinite(result.suggestion) and result.suggestion > 0
    assert result.suggestion in result.lrs


def test_plot_writes_a_png(tmp_path):
    lrs = exponential_lrs(20)
    result = LRFindResult(lrs=lrs, losses=smoothed(_curve(5, 10, 5)), suggestion=lrs[9])
    path = plot(result, tmp_path / "out" / "lr_find.png")
    assert path == tmp_path / "out" / "lr_find.png"
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
    assert [p.name for p in path.parent.iterdir()] == ["lr_find.png"]  # no temp file left


def test_plot_with_a_diverged_loss(tmp_path):
    lrs = exponential_lrs(6)
    result = LRFindResult(lrs=lrs, losses=[2.0, 1.5, 1.0, 3.0, float("inf"), float("nan")], suggestion=lrs[1])
    assert plot(result, tmp_path / "lr_find.png").read_bytes()[:8] == PNG_MAGIC
