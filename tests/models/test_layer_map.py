"""Layer maps of torchvision models (module order) and of timm models with two heads."""

from __future__ import annotations

import pytest

from tunecv.config import FinetuneConfig, ModelConfig
from tunecv.finetune.freezing import frozen_names
from tunecv.finetune.phases import plan_phases
from tunecv.models.factory import create_model
from tunecv.models.layer_map import layer_map


def _map(name: str):
    model = create_model(ModelConfig(model=name), num_classes=3)
    return model, layer_map(model)


@pytest.mark.parametrize("name, stages, stem, first_stage, head", [
    ("vit_b_16", 14, {"class_token", "encoder.pos_embedding", "conv_proj.weight"}, "encoder.layers.encoder_layer_0.",
     {"encoder.ln.weight", "heads.head.weight"}),
    ("swin_t", 9, {"features.0.0.weight"}, "features.1.", {"norm.weight", "head.weight"}),
    ("regnet_y_1_6gf", 6, {"stem.0.weight"}, "trunk_output.block1.", {"fc.weight"}),
    ("googlenet", 13, {"conv1.conv.weight"}, "conv2.", {"fc.weight"}),
    ("mobilenet_v3_small", 14, {"features.0.0.weight"}, "features.1.", {"classifier.0.weight", "classifier.3.weight"}),
    ("squeezenet1_1", 10, {"features.0.weight"}, "features.3.", {"classifier.1.weight"}),
])
def test_torchvision_layer_map_follows_the_module_order(name, stages, stem, first_stage, head):
    model, lmap = _map(name)
    assert len(lmap.stages) == stages
    assert stem <= set(lmap.stages[0])
    assert all(n.startswith(first_stage) for n in lmap.stages[1])
    assert head <= set(lmap.stages[-1]) and set(lmap.classifier) <= set(lmap.stages[-1])
    assert sorted(n for s in lmap.stages for n in s) == sorted(n for n, _ in model.named_parameters())


def test_torchvision_frozen_stages_and_gradual_use_the_stages():
    model, lmap = _map("vit_b_16")
    frozen = frozen_names(model, lmap, FinetuneConfig(frozen_stages=2))
    assert frozen == set(lmap.stages[0]) | set(lmap.stages[1]) | set(lmap.stages[2])
    phases = plan_phases(model, lmap, FinetuneConfig(strategy="gradual"), epochs=6)
    assert len(phases) == 4 and not phases[-1].frozen
    assert [len(p.frozen) for p in phases] == sorted((len(p.frozen) for p in phases), reverse=True)


def test_distilled_model_has_two_new_heads():
    model, lmap = _map("deit_tiny_distilled_patch16_224")
    assert set(lmap.classifier) == {"head.weight", "head.bias", "head_dist.weight", "head_dist.bias"}
    assert not model.head.weight.any() and not model.head_dist.weight.any()  # both start at zero
    trainable = set(lmap.names) - frozen_names(model, lmap, FinetuneConfig(freeze="all"))
    assert trainable == set(lmap.classifier)
