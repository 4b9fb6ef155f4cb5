"""Auxiliary classifiers (MindCV's `aux_factor`): inception_v3's AuxLogits and googlenet's aux1/aux2, trained with
a weighted share of the loss as in the papers.

The model's output never changes: a forward hook keeps each auxiliary head's logits on the head, and the loss
(`with_auxiliary_loss`) takes them from there. So every other forward path (evaluation, the feature cache, the
frozen-prefix replay, export) sees one tensor, and a head whose input is frozen simply adds nothing.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from tunecv.errors import UserError

# architecture: ((the module whose output feeds the head, or None when the model's own forward runs it, the head's
# name, its input channels), ...). inception_v3 is always timm's (it has the name).
AUX_HEADS: dict[tuple[str, str], tuple[tuple[str | None, str, int], ...]] = {
    ("timm", "inception_v3"): (("Mixed_6e", "AuxLogits", 768),),
    ("torchvision", "googlenet"): ((None, "aux1", 512), (None, "aux2", 528)),
}
AUX_HEAD_NAMES = frozenset(head for spec in AUX_HEADS.values() for _, head, _ in spec)
HELD = "tunecv_aux_logits"  # the attribute of a head holding its last training logits


def aux_head_spec(source: str, name: str) -> tuple[tuple[str | None, str, int], ...]:
    """The auxiliary heads of an architecture (a timm name may carry a pretrained tag)."""
    return AUX_HEADS.get((source, name.split(".")[0]), ())


def check_aux_factor(model_name: str, source: str, resolved: str, aux_factor: float) -> None:
    """A UserError for aux_factor on a model without an auxiliary classifier."""
    if aux_factor > 0 and not aux_head_spec(source, resolved):
        having = ", ".join(sorted({name for _, name in AUX_HEADS}))
        raise UserError(f"aux_factor {aux_factor:g} needs a model with an auxiliary classifier ({having}); "
                        f"{model_name} has none, so remove aux_factor or set it to 0")


def attach_aux_heads(model: nn.Module, source: str, name: str) -> None:
    """Hook each auxiliary head (already built, sized for the classes) so its training logits are kept."""
    for tap, head_name, channels in aux_head_spec(source, name):
        head = model.get_submodule(head_name)
        setattr(head, HELD, None)
        if tap is None:
            head.register_forward_hook(functools.partial(_keep_output, head))
        else:
            model.get_submodule(tap).register_forward_hook(functools.partial(_run_head, head, channels))


def _keep_output(head: nn.Module, module: nn.Module, args: Any, output: torch.Tensor) -> None:
    if head.training and torch.is_grad_enabled():
        setattr(head, HELD, output)


def _run_head(head: nn.Module, channels: int, module: nn.Module, args: Any, output: torch.Tensor) -> None:
    # a functools.partial of the head: a deep copy of the model (EMA) hooks its own copy of the head. A frozen tap
    # (eval mode), or one the frozen-prefix replay passes stored features through (another shape), feeds nothing.
    if head.training and module.training and torch.is_grad_enabled() and output.dim() == 4 \
            and output.shape[1] == channels:
        setattr(head, HELD, head(output))


def aux_heads(model: nn.Module) -> list[nn.Module]:
    """The auxiliary heads `attach_aux_heads` hooked."""
    return [m for m in model.modules() if hasattr(m, HELD)]


def aux_head_parameters(model: nn.Module) -> list[str]:
    """The auxiliary heads' parameter names: the head group's, never a stage of the body."""
    heads = [name for name, m in model.named_modules() if hasattr(m, HELD)]
    return [name for name, _ in model.named_parameters() if any(name.startswith(f"{head}.") for head in heads)]


def without_aux_heads(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of a model built with aux_factor, as the model without its auxiliary heads holds it."""
    return {key: value for key, value in state.items() if key.split(".")[0] not in AUX_HEAD_NAMES}


def aux_head_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the auxiliary heads: new layers, like the classifier, when weights are loaded."""
    return {f"{name}.{key}" for name, m in model.named_modules() if hasattr(m, HELD) for key in m.state_dict()}


class AuxiliaryLoss(nn.Module):
    """loss(main) + aux_factor * loss(each auxiliary head's logits of the same forward)."""

    def __init__(self, loss: nn.Module, heads: list[nn.Module], aux_factor: float) -> None:
        super().__init__()
        self.loss, self.aux_factor = loss, aux_factor
        self._heads = tuple(heads)  # a tuple: not sub-modules of the loss

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total = self.loss(logits, targets)
        for head in self._heads:
            held = getattr(head, HELD)
            if held is not None:
                total = total + self.aux_factor * self.loss(held, targets)
                setattr(head, HELD, None)
        return total


def with_auxiliary_loss(loss: nn.Module, model: nn.Module, aux_factor: float) -> nn.Module:
    """`loss`, plus aux_factor times its value on each auxiliary head's logits when the model has them."""
    heads = aux_heads(model)
    return AuxiliaryLoss(loss, heads, aux_factor) if aux_factor > 0 and heads else loss
