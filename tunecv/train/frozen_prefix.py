"""The frozen prefix of a model (`frozen_stages`, freeze patterns over the first layers): the modules that run
before the first trainable one. Its output is computed once per image and the rest of the model trains on it.

Found by running the model once with hooks (the forward order, whatever the architecture), then checked: the
model with the prefix skipped, fed the stored output, must give the model's output. Architectures that do more
between modules than pass a tensor along (ViT adds position embeddings between its stem and blocks) fail the
check and are not cached.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from tunecv.models.factory import kept_modes, set_train_mode


class NotCacheable(Exception):
    """The model's frozen part cannot be split off and stored (said why)."""


class _Stop(Exception):
    """Raised by the capture hook: nothing after the frozen prefix needs to run."""


@dataclass(frozen=True)
class Prefix:
    """`roots`: the outermost modules that run before the first trainable one, in forward order; `last`: the one
    whose output feeds the rest of the model."""

    roots: tuple[str, ...]
    last: str


@contextmanager
def random_weights(module: nn.Module) -> Iterator[None]:
    """Inside, `module` has random weights (a zero-initialised head agrees with anything a check compares)."""
    state = copy.deepcopy(module.state_dict())
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    try:
        yield
    finally:
        module.load_state_dict(state)


def checked_prefix(model: nn.Module, classifier: nn.Module, image: torch.Tensor) -> tuple[Prefix, int]:
    """The frozen prefix found and checked on `image` (a batch of one, on the model's device) with random
    classifier weights, and the bytes of its output per image; NotCacheable when the model does not resume from
    it."""
    prefix = find_prefix(model, image)
    with random_weights(classifier):
        return prefix, check(model, prefix, image).numel() * 4


def _own_trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters(recurse=False))


def find_prefix(model: nn.Module, images: torch.Tensor) -> Prefix:
    """The modules that finish before the first module with trainable parameters starts (one eval forward)."""
    names = {id(m): n for n, m in model.named_modules() if n}
    events: list[tuple[str, str]] = []
    hooks = []
    for name, module in model.named_modules():
        if name:
            hooks.append(module.register_forward_pre_hook(lambda m, _: events.append(("start", names[id(m)]))))
            hooks.append(module.register_forward_hook(lambda m, *_: events.append(("end", names[id(m)]))))
    try:
        with kept_modes(model), torch.no_grad():
            model.eval()
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    trainable = {n for n, m in model.named_modules() if n and _own_trainable(m)}
    finished: list[str] = []
    for kind, name in events:
        if kind == "start" and name in trainable:
            break
        if kind == "end":
            finished.append(name)
    else:
        raise NotCacheable("no module with trainable parameters runs")
    roots = [n for n in finished if not any(n.startswith(f"{other}.") for other in finished)]
    if not roots:
        raise NotCacheable("nothing frozen runs before the first trainable layer")
    ordered = sorted(set(roots), key=lambda n: max(i for i, (kind, m) in enumerate(events) if m == n and kind == "end"))
    return Prefix(tuple(ordered), ordered[-1])


@contextmanager
def prefix_skipped(model: nn.Module, prefix: Prefix) -> Iterator[None]:
    """Inside, the prefix's modules pass their input through: the model's input is the prefix's stored output."""
    modules = [model.get_submodule(name) for name in prefix.roots]
    for module in modules:
        module.forward = _passthrough
    try:
        yield
    finally:
        for module in modules:
            del module.forward


def _passthrough(x, *args, **kwargs):
    return x


@torch.no_grad()
def prefix_output(model: nn.Module, prefix: Prefix, images: torch.Tensor) -> torch.Tensor:
    """The prefix's output for `images`; the rest of the model does not run."""
    captured: list[torch.Tensor] = []

    def capture(_module, _args, output):
        captured.append(output)
        raise _Stop

    hook = model.get_submodule(prefix.last).register_forward_hook(capture)
    try:
        model(images)
    except _Stop:
        pass
    finally:
        hook.remove()
    return captured[0]


class PrefixSkipped(nn.Module):
    """The model fed the frozen prefix's stored output instead of images."""

    def __init__(self, model: nn.Module, prefix: Prefix) -> None:
        super().__init__()
        self.model, self.prefix = model, prefix

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        with prefix_skipped(self.model, self.prefix):
            return self.model(features)


def check(model: nn.Module, prefix: Prefix, images: torch.Tensor) -> torch.Tensor:
    """The prefix's output for `images`; NotCacheable unless it is the same in training and evaluation mode
    (nothing random in it) and the model with the prefix skipped, fed that output, gives the model's output."""
    try:
        with kept_modes(model):
            set_train_mode(model, keep_frozen_eval=True)
            training = prefix_output(model, prefix, images)
            model.eval()
            stored = prefix_output(model, prefix, images)
            with torch.no_grad():
                expected = model(images)
                with prefix_skipped(model, prefix):
                    resumed = model(stored)
    except (RuntimeError, TypeError, ValueError) as err:
        raise NotCacheable(f"the model does not resume from {prefix.last}'s output ({type(err).__name__})") from None
    if not isinstance(stored, torch.Tensor) or not torch.equal(training, stored):
        raise NotCacheable(f"the frozen layers up to {prefix.last} are random in training (dropout)")
    if resumed.shape != expected.shape or not torch.allclose(resumed.float(), expected.float(), rtol=1e-4,
                                                             atol=1e-4):
        raise NotCacheable(f"the model does more than pass {prefix.last}'s output on to its trainable layers")
    return stored
