"""The frozen prefix's check runs with random classifier weights: a new zero-initialised head gives zeros
whatever its input, so a model that does more than pass the prefix's output on would pass a plain check."""

from __future__ import annotations

import pytest
import timm
import torch

from tunecv.train import frozen_prefix


def _frozen_below(model: torch.nn.Module, trainable_from: str) -> None:
    trainable = False
    for name, param in model.named_parameters():
        trainable = trainable or name.startswith(trainable_from)
        param.requires_grad = trainable


def test_a_vit_without_class_token_is_not_split_even_with_a_zero_head():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2, img_size=32,
                              class_token=False, global_pool="avg").eval()
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    _frozen_below(model, "blocks.1.")
    with pytest.raises(frozen_prefix.NotCacheable):
        frozen_prefix.checked_prefix(model, model.head, torch.randn(1, 3, 32, 32))
    assert torch.count_nonzero(model.head.weight) == 0  # the random weights were put back


def test_a_convnet_splits_and_its_output_bytes_are_counted():
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=2).eval()
    _frozen_below(model, "blocks.2.")
    prefix, per_image = frozen_prefix.checked_prefix(model, model.classifier, torch.randn(1, 3, 32, 32))
    assert prefix.last.startswith("blocks.1")
    assert per_image == frozen_prefix.prefix_output(model, prefix, torch.randn(1, 3, 32, 32)).numel() * 4
