"""Scheduler: `lr_factor` numerically (warm-up, decays, stair, constant) and the LambdaLR stepped per update."""

from __future__ import annotations

import math

import pytest
import torch

from tunecv.config import SchedConfig
from tunecv.errors import UserError
from tunecv.optim.schedulers import Schedule, build_schedule, create_scheduler, lr_factor

SPE = 10  # steps per epoch


def _sched(name: str, **kwargs) -> Schedule:
    values = {"total_steps": 10 * SPE, "warmup_steps": 0, "steps_per_epoch": SPE, "decay_steps": 10 * SPE}
    values.update(kwargs)
    return Schedule(name=name, **values)


def test_warmup_first_and_last_step():
    s = _sched("cosine_decay", warmup_steps=20, decay_steps=80)
    assert lr_factor(0, s) == pytest.approx(1 / 20)
    assert lr_factor(9, s) == pytest.approx(10 / 20)
    assert lr_factor(19, s) == pytest.approx(1.0)
    assert lr_factor(20, s) == pytest.approx(1.0)  # decay starts at the peak


def test_warmup_factor_is_the_starting_point():
    s = _sched("constant", warmup_steps=4, warmup_factor=0.2)
    assert lr_factor(0, s) == pytest.approx(0.2 + 0.8 / 4)
    assert lr_factor(3, s) == pytest.approx(1.0)


def test_cosine_midpoint_and_floor():
    s = _sched("cosine_decay", floor=0.01)
    assert lr_factor(0, s) == pytest.approx(1.0)
    assert lr_factor(50, s) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(100, s) == pytest.approx(0.01)
    assert lr_factor(250, s) == pytest.approx(0.01)  # stays at the floor after decay_epochs
    assert lr_factor(99, s) < 0.012


def test_cosine_cycles_with_decay():
    s = _sched("cosine_decay", num_cycles=2, cycle_decay=0.5)
    assert lr_factor(0, s) == pytest.approx(1.0)
    assert lr_factor(50, s) == pytest.approx(0.5)  # second cycle restarts at half the peak
    assert lr_factor(75, s) == pytest.approx(0.25)


def test_step_decay():
    s = _sched("step_decay", decay_steps=3 * SPE, decay_rate=0.5)
    assert lr_factor(29, s) == pytest.approx(1.0)
    assert lr_factor(30, s) == pytest.approx(0.5)
    assert lr_factor(65, s) == pytest.approx(0.25)


def test_exponential_decay():
    s = _sched("exponential_decay", decay_steps=2 * SPE, decay_rate=0.5)
    assert lr_factor(20, s) == pytest.approx(0.5)
    assert lr_factor(10, s) == pytest.approx(math.sqrt(0.5))


def test_polynomial_decay():
    s = _sched("polynomial_decay", decay_rate=2.0, floor=0.0)
    assert lr_factor(50, s) == pytest.approx(0.25)
    assert lr_factor(100, s) == pytest.approx(0.0)


def test_multi_step_decay_at_milestones():
    s = _sched("multi_step_decay", milestones=(3, 6), decay_rate=0.1)
    assert lr_factor(29, s) == pytest.approx(1.0)
    assert lr_factor(30, s) == pytest.approx(0.1)
    assert lr_factor(59, s) == pytest.approx(0.1)
    assert lr_factor(60, s) == pytest.approx(0.01)


def test_lr_epoch_stair_constant_within_an_epoch():
    s = _sched("cosine_decay", stair=True, floor=0.0)
    epoch3 = [lr_factor(step, s) for step in range(30, 40)]
    assert epoch3 == [epoch3[0]] * SPE
    assert epoch3[0] == pytest.approx(lr_factor(30, _sched("cosine_decay", floor=0.0)))
    assert lr_factor(40, s) < epoch3[0]


def test_constant():
    s = _sched("constant")
    assert {lr_factor(step, s) for step in (0, 37, 99, 500)} == {1.0}


def test_unknown_schedule_name():
    with pytest.raises(UserError, match="unknown scheduler 'linear'"):
        lr_factor(0, _sched("linear"))
    with pytest.raises(UserError, match="unknown scheduler"):
        build_schedule(SchedConfig(scheduler="linear"), 0.1, SPE, 3)


def test_build_schedule_in_steps():
    s = build_schedule(SchedConfig(warmup_epochs=0.5, min_lr=1e-3), lr=0.1, steps_per_epoch=SPE, epochs=4)
    assert (s.total_steps, s.warmup_steps, s.decay_steps) == (40, 5, 35)  # decay: the rest of the run
    assert s.floor == pytest.approx(0.01)
    s = build_schedule(SchedConfig(decay_epochs=2, multi_step_decay_milestones=(1, 2)), 0.1, SPE, 4)
    assert s.decay_steps == 20 and s.milestones == (1, 2)


def test_create_scheduler_steps_per_update():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = create_scheduler(optimizer, SchedConfig(warmup_epochs=1, min_lr=0.0), lr=0.1,
                                 steps_per_epoch=4, epochs=3)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert lrs[4] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:]))  # cosine after the warm-up
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # the end of the run is the floor
