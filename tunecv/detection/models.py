"""Detectors: torchvision's R-CNN family and RetinaNet built for K classes (+ background), and the MMDetection
seed's fine-tuning step: load a checkpoint made for other classes, replacing only the class-specific head layers.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from timm.layers import freeze_batch_norm_2d
from torch import nn
from torchvision.models import detection

from tunecv.errors import UserError
from tunecv.models.weights import key_problems

logger = logging.getLogger(__name__)

_RCNN_HEAD = ("roi_heads.box_predictor.cls_score.", "roi_heads.box_predictor.bbox_pred.")
_MASK_HEAD = ("roi_heads.mask_predictor.mask_fcn_logits.",)


@dataclass(frozen=True)
class Detector:
    builder: Callable[..., nn.Module]
    masks: bool  # predicts instance masks
    class_head: tuple[str, ...]  # key prefixes whose shape depends on the class count: what a new dataset replaces
    backbone_layers: int  # torchvision's trainable_backbone_layers range is 0..this


DETECTORS = {
    "maskrcnn_resnet50_fpn": Detector(detection.maskrcnn_resnet50_fpn, True, _RCNN_HEAD + _MASK_HEAD, 5),
    "maskrcnn_resnet50_fpn_v2": Detector(detection.maskrcnn_resnet50_fpn_v2, True, _RCNN_HEAD + _MASK_HEAD, 5),
    "fasterrcnn_resnet50_fpn": Detector(detection.fasterrcnn_resnet50_fpn, False, _RCNN_HEAD, 5),
    "fasterrcnn_resnet50_fpn_v2": Detector(detection.fasterrcnn_resnet50_fpn_v2, False, _RCNN_HEAD, 5),
    "fasterrcnn_mobilenet_v3_large_fpn": Detector(detection.fasterrcnn_mobilenet_v3_large_fpn, False, _RCNN_HEAD, 6),
    "retinanet_resnet50_fpn": Detector(detection.retinanet_resnet50_fpn, False,
                                       ("head.classification_head.cls_logits.",), 5),
}


def detector_spec(name: str) -> Detector:
    if name not in DETECTORS:
        close = difflib.get_close_matches(name, DETECTORS, n=3, cutoff=0.4)
        raise UserError(f"unknown detector {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                        + f" (choose from {', '.join(sorted(DETECTORS))})")
    return DETECTORS[name]


def create_detector(name: str, num_classes: int, *, min_size: int | tuple[int, ...] = 800, max_size: int = 1333,
                    trainable_backbone_layers: int | None = None, frozen_bn: bool = True) -> nn.Module:
    """`name` for `num_classes` object classes (the background is added), randomly initialised: weights come from
    `load_detector_weights`. `min_size`/`max_size`: the model's own resize of each image (several min_size: one
    drawn per training image, the last in evaluation). `frozen_bn`: the backbone's BatchNorm as fixed affine
    layers (torchvision does so for pretrained backbones: detection batches are too small for batch statistics).
    `trainable_backbone_layers`: how many of the backbone's stages train, from the top (None: all)."""
    spec = detector_spec(name)
    model = spec.builder(weights=None, weights_backbone=None, num_classes=num_classes + 1, min_size=min_size,
                         max_size=max_size)
    if frozen_bn:
        model.backbone.body = freeze_batch_norm_2d(model.backbone.body)
    if trainable_backbone_layers is not None:
        freeze_backbone_stages(model, trainable_backbone_layers, spec.backbone_layers)
    return model


def freeze_backbone_stages(model: nn.Module, trainable: int, most: int) -> list[str]:
    """torchvision's trainable_backbone_layers, applied after the build (its builders ignore it without their own
    weights): the backbone body trains its last `trainable` stages only; the FPN and heads always train. Returns
    the names of the frozen parameters."""
    if not 0 <= trainable <= most:
        raise UserError(f"trainable_backbone_layers {trainable} is out of range for this detector (0..{most})")
    body = model.backbone.body
    if hasattr(body, "layer4"):  # ResNet: the stages from the top, then the stem (with its norm when all train)
        training = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable] + (["bn1"] if trainable == 5 else [])
        frozen = [n for n, _ in body.named_parameters() if not n.startswith(tuple(training))]
    else:  # MobileNetV3: stages begin at the blocks torchvision marks _is_cn
        blocks = list(body.children())
        starts = [0] + [i for i, block in enumerate(blocks) if getattr(block, "_is_cn", False)] + [len(blocks) - 1]
        first_trained = len(blocks) if trainable == 0 else starts[len(starts) - trainable]
        frozen = [f"{i}.{n}" for i, block in enumerate(blocks[:first_trained]) for n, _ in block.named_parameters()]
    for name, parameter in body.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)
    return frozen


def load_detector_weights(model: nn.Module, name: str, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load a checkpoint of `name` (e.g. COCO's 91 classes, or our own for other classes); the class-specific
    head tensors of another shape keep their new initialisation. Returns those replaced keys.

    Raises:
        UserError: any other key is missing, unexpected or of another shape (not this detector's checkpoint).
    """
    own = model.state_dict()
    # BatchNorm's batch count: dropped for frozen BatchNorm, which keeps none; kept at the model's own where a
    # checkpoint of frozen BatchNorm (torchvision's COCO weights) loads into BatchNorm that trains
    state = {k: v for k, v in state.items() if k in own or not k.endswith(".num_batches_tracked")}
    state.update({k: v for k, v in own.items() if k.endswith(".num_batches_tracked") and k not in state})
    head = detector_spec(name).class_head
    replaced = sorted(k for k, v in state.items() if k in own and k.startswith(head) and v.shape != own[k].shape)
    problems = key_problems(own, state, reshaped=set(replaced))
    if problems:
        raise UserError(f"checkpoint {source} is not a {name} checkpoint: {'; '.join(problems)} keys; check model "
                        "and load_from")
    model.load_state_dict({k: v for k, v in state.items() if k not in replaced}, strict=False)
    if replaced:
        logger.info("weights: %s; the class head is new, not loaded: %s", source, ", ".join(replaced))
    return replaced
