"""Models: name resolution (timm, MindCV aliases, torchvision), `create_model` with a new head, freezing.

Must not build optimizers. Weight loading lives in `tunecv.models.weights`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import timm
import torch
import torchvision
from torch import nn

from tunecv.config import ModelConfig
from tunecv.errors import UserError
from tunecv.models.aux_heads import attach_aux_heads, aux_head_spec
from tunecv.models.mindcv_names import difference
from tunecv.models.names import (
    architecture_options,
    built_as,
    check_model_options,
    pretrained_input_size,
    resolve_model_name,
    size_options,
)

logger = logging.getLogger(__name__)

def check_runs_at(cfg: ModelConfig, input_size: int) -> None:
    """A UserError when the model cannot take `input_size` px images (halonet's attention blocks, inception's
    auxiliary head below 299 px): found by a training forward on the meta device, before any data is read."""
    try:
        with torch.device("meta"):
            model = create_model(cfg, cfg.num_classes or 2, input_size=input_size, quiet=True).train()
            model(torch.empty(2, cfg.in_channels, input_size, input_size))
    except (RuntimeError, NotImplementedError) as err:
        if "meta" in str(err):  # a build or forward the meta device cannot do: nothing known either way
            return
        problem = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
    except (AssertionError, ValueError) as err:
        problem = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
    else:
        return
    raise UserError(f"model {cfg.model} cannot run on {input_size} px inputs{f' ({problem})' if problem else ''}; set "
                    f"image_resize {pretrained_input_size(cfg.model)}, the size its weights were trained at")


def create_model(cfg: ModelConfig, num_classes: int, *, input_size: int | None = None, quiet: bool = False
                 ) -> nn.Module:
    """Build the architecture with a fresh `num_classes` head (and auxiliary heads for aux_factor) for `input_size`
    px inputs; weights are loaded by `tunecv.models.weights`. `quiet`: no log line (a structure built to plan
    with, on the meta device)."""
    check_model_options(cfg)
    source, name = resolve_model_name(cfg.model)
    aux = cfg.aux_factor > 0
    if source == "timm":
        kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": cfg.in_channels}
        if cfg.drop_rate is not None:
            kwargs["drop_rate"] = cfg.drop_rate
        if cfg.drop_path_rate is not None:
            kwargs["drop_path_rate"] = cfg.drop_path_rate
        if aux:
            kwargs["aux_logits"] = True
        kwargs.update(size_options(cfg.model, input_size))
        try:
            model = create_timm_model(name, **kwargs, **architecture_options(cfg.model))
        except TypeError as err:
            raise UserError(f"model {name} does not accept these options ({err}); remove drop_rate, drop_path_rate "
                            "or aux_factor") from None
    else:
        size_options(cfg.model, input_size)  # torchvision's fixed-size models take that size only
        model = create_torchvision_model(name, num_classes, aux_logits=aux, **architecture_options(cfg.model))
        if cfg.in_channels != 3:
            raise UserError(f"in_channels={cfg.in_channels} is only supported for timm models, not {name}")
    if aux:
        model.aux_logits = False  # the forward returns the logits alone; the hooks keep the auxiliary ones
        attach_aux_heads(model, source, name)
    zero_init_classifier(model)
    if not quiet:
        if difference(cfg.model):  # for MindCV users; timm's and torchvision's own users expect their model
            logger.info("model: %s is %s's %s; %s", cfg.model, source, name, difference(cfg.model))
        logger.info("model: %s (%s) with a new %d-class head%s", cfg.model, built_as(cfg.model) or source, num_classes,
                    f" and {len(aux_head_spec(source, name))} auxiliary head(s), loss weight {cfg.aux_factor:g}"
                    if aux else "")
    return model


def create_timm_model(name: str, **kwargs: Any) -> nn.Module:
    """timm.create_model, untrained; a width or grouping that timm's registered names fix (mobilenetv1 at 0.25,
    RepVGG in 2 groups) from timm's own builder of that family."""
    if name == "mobilenetv1_100" and "channel_multiplier" in kwargs:
        from timm.models.efficientnet import _gen_mobilenet_v1

        return _gen_mobilenet_v1(name, pretrained=False, **kwargs)
    if name.startswith("repvgg_") and "groups" in kwargs:
        from timm.models.byobnet import ByobNet, checkpoint_filter_fn, model_cfgs

        regroup = functools.partial(_every_other_grouped, kwargs.pop("groups"))
        cfg = model_cfgs[name]
        cfg = dataclasses.replace(cfg, blocks=tuple(dataclasses.replace(b, gs=regroup) for b in cfg.blocks))
        return timm.models.build_model_with_cfg(ByobNet, name, False, model_cfg=cfg,
                                                pretrained_filter_fn=checkpoint_filter_fn,
                                                feature_cfg={"flatten_sequential": True}, **kwargs)
    return timm.create_model(name, pretrained=False, **kwargs)


def _every_other_grouped(groups: int, channels: int, index: int) -> int:
    """RepVGG's group size: every second 3x3 convolution in `groups` groups (timm's and MindCV's g4 layout)."""
    return channels // groups if (index + 1) % 2 == 0 else 0


def zero_init_classifier(model: nn.Module) -> None:
    """Start the new head at zero: the loss starts at ln(num_classes). timm's own init, sized for 1000 classes,
    gives 10-class logits a std of ~13 on pretrained features (initial loss ~18) and the first steps wreck the
    backbone."""
    for name in classifier_names(model):
        head = model.get_submodule(name)
        if not isinstance(head, nn.Linear):
            continue  # squeezenet's conv head feeds a ReLU: at zero no gradient would ever flow
        with torch.no_grad():
            for param in head.parameters():
                param.zero_()


def create_torchvision_model(name: str, num_classes: int, aux_logits: bool = False, **options: Any) -> nn.Module:
    """A torchvision classifier with its last 1000-way layer replaced by a `num_classes` one (`aux_logits`: with
    googlenet's or inception_v3's auxiliary heads, sized for `num_classes` too; `options`: its builder's
    architecture arguments, e.g. width_mult)."""
    kwargs: dict[str, Any] = dict(options)
    if name in ("googlenet", "inception_v3"):
        # transform_input: the ImageNet weights expect it, and it is not in the state_dict, so always on
        kwargs.update(aux_logits=aux_logits, init_weights=True, transform_input=True)
        if aux_logits:
            kwargs["num_classes"] = num_classes
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    head_name = classifier_name(model)
    old = model.get_submodule(head_name)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes)
    else:  # squeezenet ends in a 1x1 convolution
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
    parent_name, _, child = head_name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def classifier_name(model: nn.Module) -> str:
    """Name of the final classification layer (timm's pretrained_cfg, else the last Linear/1x1 Conv)."""
    timm_name = getattr(model, "pretrained_cfg", {}).get("classifier") if hasattr(model, "pretrained_cfg") else None
    if isinstance(timm_name, str) and _has_module(model, timm_name):
        return timm_name
    candidates = [name for name, m in model.named_modules()
                  if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1))]
    if not candidates:
        raise UserError(f"cannot find the classifier layer of {type(model).__name__}")
    return candidates[-1]


def classifier_names(model: nn.Module) -> list[str]:
    """Every new classification layer: distilled timm models (deit_*_distilled) have two, head and head_dist."""
    names = getattr(model, "pretrained_cfg", {}).get("classifier") if hasattr(model, "pretrained_cfg") else None
    if isinstance(names, (tuple, list)):
        present = [n for n in names if isinstance(n, str) and _has_module(model, n)]
        if present:
            return present
    return [classifier_name(model)]


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the classifiers (the tensors replaced when the class count changes)."""
    return {f"{head}.{key}" for head in classifier_names(model) for key in model.get_submodule(head).state_dict()}


def frozen_modules(model: nn.Module) -> list[nn.Module]:
    """The largest sub-modules whose parameters are all frozen: they stay in eval mode while training,
    so BatchNorm statistics and dropout of a frozen backbone are untouched."""
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            found.append(module)
            return
        for child in module.children():
            visit(child)

    for child in model.children():
        visit(child)
    # Modules with buffers but no parameters (BatchNorm with affine=False) follow the parameterised module
    # defined before them: frozen after a frozen convolution, trainable after a trainable one.
    inside = {id(m) for top in found for m in top.modules()}
    previous_trainable = True
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if own:
            previous_trainable = any(p.requires_grad for p in own)
        elif not previous_trainable and list(module.buffers(recurse=False)) and id(module) not in inside:
            found.append(module)
    return found


def set_train_mode(model: nn.Module, keep_frozen_eval: bool = True, keep_eval: Sequence[nn.Module] = ()) -> None:
    """model.train(), with the frozen parts kept in eval mode (freeze_bn: BatchNorm statistics untouched), and
    `keep_eval` too, though they train (unfreeze_bn: eval)."""
    model.train()
    if keep_frozen_eval:
        for module in frozen_modules(model):
            module.eval()
    for module in keep_eval:
        module.eval()


@contextlib.contextmanager
def kept_modes(model: nn.Module) -> Iterator[None]:
    """Whatever the block sets (eval, set_train_mode), every module leaves it in the mode it entered with."""
    modes = [module.training for module in model.modules()]
    try:
        yield
    finally:
        for module, mode in zip(model.modules(), modes):
            module.training = mode


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def num_outputs(model: nn.Module) -> int:
    head = model.get_submodule(classifier_name(model))
    return head.out_features if isinstance(head, nn.Linear) else head.out_channels
