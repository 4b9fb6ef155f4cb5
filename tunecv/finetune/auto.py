"""`strategy: auto`: the decision between the linear probe, a partial fine-tune (the top stages), lp_ft and full
fine-tuning, from measurements on a held-out slice of the training images (never the validation set the run
reports). One backbone pass serves them all: the frozen stem and lower stages run once per image, and what trains
on their stored outputs costs a fraction of an epoch.

1. The linear probe: a logistic regression on the frozen backbone's features. When it gets the held-out slice right
   but for an image, nothing is left to gain: linear_probe.
2. The top two stages and the head, trained for PARTIAL_EPOCHS epochs on the lower stages' stored outputs. No gain
   of at least a point (and an image) over the probe: linear_probe (moving the features gains nothing measurable).
   A gain of FULL_GAIN_POINTS or more: the data is far from ImageNet and every layer should move from the first
   epoch: full (on the digits demo full fine-tuning beat the partial recipes and lp_ft, docs/results.md).
3. A gain in between: the top stage alone and the head, on the same stored outputs. When the second stage adds a
   gain that counts, the lower layers matter too: lp_ft (every layer, after the head has converged; full when the
   run is one epoch). Otherwise the partial recipe that was measured: freeze:N, the top two stages.

Pure: the measurements themselves are `tunecv.train.strategy_measure`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HOLDOUT_FRACTION = 0.2  # of each class's training images, held out to measure on
MIN_HELD_OUT = 10  # fewer held-out images decide nothing: one image is over ten points
MAX_IMAGES = 2500  # measured on at most this many training images (a stratified sample): the cost stays bounded
MIN_GAIN_POINTS = 1.0  # fine-tuning must beat the probe by this much (and by one held-out image) to be chosen
FULL_GAIN_POINTS = 2.0  # the top two stages' gain over the probe from which every layer should move
PARTIAL_EPOCHS = 2  # of each partial measurement: enough to show a gain on digits, cheap on ants/bees (measured)


@dataclass(frozen=True)
class Measurement:
    """One recipe's top-1 (%) on the held-out images, and its cost in seconds."""

    recipe: str
    top1: float
    seconds: float


@dataclass(frozen=True)
class Decision:
    strategy: str
    reason: str


def partial_depths(stages: int) -> tuple[int, int] | None:
    """(frozen_stages training the top stage, frozen_stages training the top two): `stages` counts the stem and
    the head group; None when the model has too few stages to split (coarse layer maps)."""
    return (stages - 3, stages - 4) if stages >= 4 else None


def holdout_split(targets: Sequence[int], fraction: float = HOLDOUT_FRACTION, seed: int = 0,
                  max_images: int = MAX_IMAGES) -> tuple[list[int], list[int]]:
    """(fit, held-out) indices: `fraction` of each class held out (at least one image of a class with two or more,
    none of a class with one), drawn with `seed`; at most `max_images` in all, each class sampled alike."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(targets)
    keep = min(1.0, max_images / max(len(labels), 1))
    fit, held = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        members = members[:max(1, round(len(members) * keep))]
        count = 0 if len(members) < 2 else max(1, round(len(members) * fraction))
        held.extend(members[:count].tolist())
        fit.extend(members[count:].tolist())
    return sorted(fit), sorted(held)


def probe_leaves_room(probe: Measurement, held_out: int) -> bool:
    """Whether fine-tuning could gain anything measurable: more than one held-out image is wrong."""
    wrong = round((100.0 - probe.top1) / 100.0 * held_out)
    return wrong > 1


def needed_gain(held_out: int) -> float:
    """The smallest gain (points) that is more than noise: MIN_GAIN_POINTS, and at least one held-out image."""
    return max(MIN_GAIN_POINTS, 100.0 / max(held_out, 1))


def measuring_lr(opt: str) -> float:
    """The measurements' lr under `lr: auto` (the range test runs after, for the chosen strategy): timm's usual
    fine-tuning rates."""
    return 0.01 if opt in ("sgd", "momentum", "nesterov") else 1e-3


def gains(probe: Measurement, partial: Measurement | None, held_out: int) -> bool:
    """Whether training the top of the network beat the probe by more than noise."""
    return partial is not None and partial.top1 - probe.top1 >= needed_gain(held_out)


def moderate(probe: Measurement, top_two: Measurement, held_out: int) -> bool:
    """A gain that counts but is under FULL_GAIN_POINTS: the top stage alone is measured to place it."""
    return gains(probe, top_two, held_out) and top_two.top1 - probe.top1 < FULL_GAIN_POINTS


def too_few(held_out: int) -> Decision:
    return Decision("linear_probe", f"{held_out} held-out images are too few to measure on ({MIN_HELD_OUT} needed); "
                                    "with so few images the linear probe is the safe recipe")


def decide(probe: Measurement, top_two: Measurement | None, top_one: Measurement | None, held_out: int,
           epochs: int, depths: tuple[int, int] | None, unsplit: str | None = None) -> Decision:
    """`top_two`, `top_one`: the partial measurements (None: not measured); `epochs`: the run's (lp_ft needs two);
    `depths`: partial_depths'; `unsplit`: why no partial fine-tune could be measured (then a probe with room
    means lp_ft)."""
    needed = needed_gain(held_out)
    whole = "lp_ft" if epochs >= 2 else "full"
    if not probe_leaves_room(probe, held_out):
        return Decision("linear_probe", f"the probe leaves no room (at most one of {held_out} held-out images wrong)")
    if unsplit is not None or depths is None or top_two is None:
        return Decision(whole, f"the probe leaves room, and no partial fine-tune could be measured ({unsplit})")
    gain = top_two.top1 - probe.top1
    if not gains(probe, top_two, held_out):
        return Decision("linear_probe", f"the top two stages gained {gain:+.2f} points over the probe, under the "
                                        f"{needed:.2f} that count")
    if gain >= FULL_GAIN_POINTS:
        return Decision("full", f"the top two stages gained {gain:+.2f} points over the probe ({FULL_GAIN_POINTS:g} or "
                                "more): far from ImageNet, every layer moves from the first epoch")
    deep = top_two.top1 - top_one.top1
    if deep >= needed:
        return Decision(whole, f"the top two stages gained {gain:+.2f} points, the second {deep:+.2f} of them: the "
                               "lower layers matter too; the head first, then every layer")
    return Decision(f"freeze:{depths[1]}", f"the top two stages gained {gain:+.2f} points and the lower layers "
                                           f"little (the second stage {deep:+.2f})")


def decision_table(decision: Decision, measurements: Sequence[Measurement], fit: int, held_out: int) -> str:
    """The log's table: its first line starts with `strategy auto:`."""
    seconds = sum(m.seconds for m in measurements)
    lines = [f"strategy auto: {decision.strategy}, measured on {held_out} training images held out ({fit} trained "
             f"on) in {seconds:.1f} s (budget: one backbone pass, then {PARTIAL_EPOCHS} epochs of each partial "
             "fine-tune on its stored outputs)",
             f"  {'measurement':<66} {'held-out top-1':>14} {'time':>8}"]
    lines += [f"  {m.recipe:<66} {m.top1:>12.2f} % {m.seconds:>6.1f} s" for m in measurements]
    lines.append(f"  decision: {decision.strategy}: {decision.reason}")
    return "\n".join(lines)
