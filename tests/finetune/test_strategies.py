"""Strategy: the layer map of real timm / torchvision models, the freeze keys, the patterns (MindCV features.N
included) and the phases of freeze_epochs, unfreeze_schedule and gradual."""

from __future__ import annotations

import pytest
import timm
import torchvision
from torch import nn

from conftest import TINY_MODEL, apply_freeze
from tunecv.config import FinetuneConfig
from tunecv.errors import UserError
from tunecv.finetune.freezing import compile_pattern, frozen_names, match_names
from tunecv.finetune.phases import apply_phase, plan_phases
from tunecv.models.layer_map import layer_map, mindcv_feature_prefixes


def _timm(name: str) -> nn.Module:
    return timm.create_model(name, pretrained=False, num_classes=3)


@pytest.fixture(scope="module")
def effnet() -> nn.Module:
    return _timm(TINY_MODEL)


@pytest.fixture(scope="module")
def mobilenet() -> nn.Module:
    return _timm("mobilenetv3_small_100")


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return _timm("resnet18")


@pytest.fixture(scope="module")
def convnext() -> nn.Module:
    return _timm("convnext_atto")


def _names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def _under(model: nn.Module, *prefixes: str) -> set[str]:
    """Parameter names under any of the module prefixes (computed from the names, not from layer_map)."""
    return {n for n in _names(model) if any(n == p or n.startswith(f"{p}.") for p in prefixes)}


def _numel(model: nn.Module, names: set[str]) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n in names)


def _frozen(model: nn.Module, **keys) -> set[str]:
    return frozen_names(model, layer_map(model), FinetuneConfig(**keys))


# ---------------------------------------------------------------------------------------------------- layer map

@pytest.mark.parametrize("fixture, stem, head, classifier", [
    ("effnet", ("conv_stem", "bn1"), ("conv_head", "bn2", "classifier"), "classifier"),
    ("mobilenet", ("conv_stem", "bn1"), ("conv_head", "classifier"), "classifier"),
    ("resnet", ("conv1", "bn1"), ("fc",), "fc"),
    ("convnext", ("stem",), ("head.norm", "head.fc"), "head.fc"),
])
def test_layer_map_stem_first_head_group_last(fixture, stem, head, classifier, request):
    model = request.getfixturevalue(fixture)
    lmap = layer_map(model)
    names = _names(model)
    # every parameter exactly once, in both orders
    assert sorted(lmap.names) == sorted(names)
    assert sorted(n for stage in lmap.stages for n in stage) == sorted(names)
    for order in (lmap.layers, lmap.stages):
        assert set(order[0]) == _under(model, *stem)
        assert set(order[-1]) == _under(model, *head)
    assert set(lmap.classifier) == _under(model, classifier) and len(lmap.classifier) == 2


def test_layer_map_stages_are_the_timm_stages(effnet, resnet, convnext):
    # effnet: stem, blocks.0..blocks.4, head; resnet: stem, layer1..4, fc; convnext: stem, stages.0..3, head
    assert [set(s) for s in layer_map(effnet).stages[1:-1]] == [_under(effnet, f"blocks.{i}") for i in range(5)]
    assert [set(s) for s in layer_map(resnet).stages[1:-1]] == [_under(resnet, f"layer{i}") for i in range(1, 5)]
    assert [set(s) for s in layer_map(convnext).stages[1:-1]] == [_under(convnext, f"stages.{i}") for i in range(4)]


def test_layer_map_layers_are_blocks(mobilenet, resnet):
    # fine layers: one per block (mobilenetv3_small: 1+2+3+2+3 inverted residuals + the final conv)
    layers = layer_map(mobilenet).layers
    blocks = [f"blocks.{i}.{j}" for i, n in enumerate((1, 2, 3, 2, 3, 1)) for j in range(n)]
    assert [set(layer) for layer in layers[1:-1]] == [_under(mobilenet, b) for b in blocks]
    resnet_blocks = [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert [set(layer) for layer in layer_map(resnet).layers[1:-1]] == [_under(resnet, b) for b in resnet_blocks]


def test_layer_map_vit():
    model = _timm("vit_tiny_patch16_224")
    lmap = layer_map(model)
    assert set(lmap.layers[0]) == _under(model, "cls_token", "pos_embed", "patch_embed")
    assert [set(layer) for layer in lmap.layers[1:-1]] == [_under(model, f"blocks.{i}") for i in range(12)]
    assert set(lmap.layers[-1]) == _under(model, "norm", "head")
    assert lmap.classifier == ("head.weight", "head.bias")


def test_layer_map_torchvision_resnet_fallback():
    model = torchvision.models.get_model("resnet18", weights=None)
    assert not hasattr(model, "group_matcher")
    lmap = layer_map(model)
    assert [set(s) for s in lmap.stages] == [_under(model, "conv1", "bn1"),
                                             *(_under(model, f"layer{i}") for i in range(1, 5)), _under(model, "fc")]
    assert lmap.classifier == ("fc.weight", "fc.bias")
    frozen = _frozen(model, frozen_stages=2)
    assert frozen == _under(model, "conv1", "bn1", "layer1", "layer2")


def test_layer_map_torchvision_mobilenet_fallback():
    model = torchvision.models.get_model("mobilenet_v3_small", weights=None)
    lmap = layer_map(model)
    # one container holds the body: its children are the stages
    assert [set(s) for s in lmap.stages[:-1]] == [_under(model, f"features.{i}") for i in range(13)]
    assert set(lmap.stages[-1]) == _under(model, "classifier")
    assert lmap.classifier == ("classifier.3.weight", "classifier.3.bias")
    # torchvision's own features.N are plain module names (no MindCV translation)
    assert set(match_names("features.3", _names(model), model, key="freeze_patterns")) == _under(model, "features.3")


# ---------------------------------------------------------------------------------------------- freeze keys

@pytest.mark.parametrize("stages", [0, 1, 2, 5])
def test_frozen_stages_freezes_stem_and_first_n_stages(stages):
    model = _timm(TINY_MODEL)
    frozen = apply_freeze(model, FinetuneConfig(frozen_stages=stages))
    expected = _under(model, "conv_stem", "bn1", *(f"blocks.{i}" for i in range(stages)))
    assert frozen == expected
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(_names(model)) - expected
    total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in model.parameters() if not p.requires_grad) == _numel(model, expected)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == total - _numel(model, expected)
    if stages < 5:  # the next stage trains
        assert _under(model, f"blocks.{stages}") <= trainable
    assert _under(model, "conv_head", "bn2", "classifier") <= trainable


def test_frozen_stages_resnet_and_convnext(resnet, convnext):
    assert _frozen(resnet, frozen_stages=2) == _under(resnet, "conv1", "bn1", "layer1", "layer2")
    assert _frozen(resnet, frozen_stages=4) == set(_names(resnet)) - _under(resnet, "fc")
    assert _frozen(convnext, frozen_stages=1) == _under(convnext, "stem", "stages.0")


@pytest.mark.parametrize("fixture, too_many", [("effnet", 6), ("resnet", 5), ("convnext", 5)])
def test_frozen_stages_too_large_is_user_error(fixture, too_many, request):
    model = request.getfixturevalue(fixture)
    with pytest.raises(UserError, match=rf"frozen_stages {too_many}:.*use 0\.\.{too_many - 1}"):
        _frozen(model, frozen_stages=too_many)


def test_freeze_layers(resnet, mobilenet):
    assert _frozen(resnet, freeze_layers=1) == _under(resnet, "conv1", "bn1")
    assert _frozen(resnet, freeze_layers=3) == _under(resnet, "conv1", "bn1", "layer1.0", "layer1.1")
    assert _frozen(resnet, freeze_layers=9) == set(_names(resnet)) - _under(resnet, "fc")
    # layers are blocks, finer than stages: 4 layers of mobilenet end inside stage blocks.1
    assert _frozen(mobilenet, freeze_layers=4) == _under(mobilenet, "conv_stem", "bn1", "blocks.0.0", "blocks.1.0",
                                                         "blocks.1.1")
    with pytest.raises(UserError, match="freeze_layers 10"):
        _frozen(resnet, freeze_layers=10)


def test_freeze_all_vs_head_only(effnet):
    names = set(_names(effnet))
    assert names - _frozen(effnet, freeze="all") == {"classifier.weight", "classifier.bias"}
    assert names - _frozen(effnet, freeze="head_only") == _under(effnet, "conv_head", "bn2", "classifier")
    assert _frozen(effnet) == set()


def test_apply_freeze_sets_requires_grad():
    model = _timm(TINY_MODEL)
    apply_freeze(model, FinetuneConfig(freeze="all"))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}
    apply_freeze(model, FinetuneConfig())  # none: everything trains again
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------------------- patterns

NAMES = ["blocks.1.conv.weight", "blocks.10.conv.weight", "blocks.1x.weight", "blocks.2.bn1.bias", "head.weight"]


def test_pattern_prefix_is_a_module_boundary():
    assert match_names("blocks.1", NAMES, key="k") == ["blocks.1.conv.weight"]
    assert match_names("blocks.1.conv.weight", NAMES, key="k") == ["blocks.1.conv.weight"]
    assert compile_pattern("blocks.1")("blocks.1") and not compile_pattern("blocks.1")("blocks.10.a")


def test_pattern_glob_and_regex():
    assert match_names("blocks.1*", NAMES, key="k") == NAMES[:3]
    assert match_names("blocks.[12]", NAMES, key="k") == ["blocks.1.conv.weight", "blocks.2.bn1.bias"]
    assert match_names("re:bn\\d\\.bias$", NAMES, key="k") == ["blocks.2.bn1.bias"]
    assert match_names("re:^blocks\\.1\\d", NAMES, key="k") == ["blocks.10.conv.weight"]
    assert match_names("*", NAMES, key="k") == NAMES and match_names("all", NAMES, key="k") == NAMES


def test_bad_regex_is_user_error():
    with pytest.raises(UserError, match="not a valid regular expression"):
        compile_pattern("re:blocks.(")


def test_freeze_and_unfreeze_patterns(effnet):
    names = set(_names(effnet))
    assert _frozen(effnet, freeze_patterns=("blocks",), unfreeze_patterns=("blocks.4",)) == \
        _under(effnet, *(f"blocks.{i}" for i in range(4)))
    # unfreeze_patterns apply after every freeze key
    frozen = _frozen(effnet, freeze="all", unfreeze_patterns=("conv_head", "re:^bn2\\."))
    assert names - frozen == _under(effnet, "conv_head", "bn2", "classifier")
    frozen = _frozen(effnet, frozen_stages=3, freeze_patterns=("blocks.4*",), unfreeze_patterns=("re:bn",))
    blocks = ("blocks.0", "blocks.1", "blocks.2", "blocks.4")  # stages 1-3 and the glob; blocks.3 trains
    assert frozen == {n for n in _under(effnet, "conv_stem", "bn1", *blocks) if "bn" not in n}


@pytest.mark.parametrize("key", ["freeze_patterns", "unfreeze_patterns"])
def test_pattern_matching_nothing_is_user_error_naming_the_key(effnet, key):
    with pytest.raises(UserError) as info:
        _frozen(effnet, **{key: ("conv_stm",)})
    message = str(info.value)
    assert message.startswith(f"{key}: pattern 'conv_stm' matches no parameter")
    assert "conv_stem" in message  # the closest module name


def test_mindcv_feature_prefixes(mobilenet, effnet):
    prefixes = mindcv_feature_prefixes(mobilenet)
    assert len(prefixes) == 17  # MindCV mobilenet_v3_small: 3 stem entries, 11 blocks, 3 last-conv entries
    assert prefixes[:4] == ["conv_stem", "bn1", None, "blocks.0.0"]
    assert prefixes[14:] == ["blocks.5.0.conv", "blocks.5.0.bn1", None]
    assert mindcv_feature_prefixes(effnet) is None


def test_mindcv_features_alias(mobilenet):
    names = _names(mobilenet)

    def match(pattern: str) -> set[str]:
        return set(match_names(pattern, names, mobilenet, key="freeze_patterns"))

    assert match("features.0") == {"conv_stem.weight"}
    assert match("features.1") == {"bn1.weight", "bn1.bias"}
    assert match("features.2") == set()  # an activation
    assert match("features.3") == _under(mobilenet, "blocks.0.0")
    assert match("features.13") == _under(mobilenet, "blocks.4.2")
    assert match("features.14") == {"blocks.5.0.conv.weight"}
    assert match("features.15") == {"blocks.5.0.bn1.weight", "blocks.5.0.bn1.bias"}
    with pytest.raises(UserError, match="freeze_patterns: features.17 is past MindCV's last layer features.16"):
        match("features.17")


def test_mindcv_first_seven_layers(mobilenet):
    """MindCV's tutorial freezes `features.0` .. `features.6` of mobilenet_v3_small."""
    frozen = _frozen(mobilenet, freeze_patterns=tuple(f"features.{i}" for i in range(7)))
    assert frozen == _under(mobilenet, "conv_stem", "bn1", "blocks.0.0", "blocks.1.0", "blocks.1.1", "blocks.2.0")
    assert not _under(mobilenet, "blocks.2.1") & frozen
    assert _frozen(mobilenet, freeze_layers=5) == frozen  # the README's equivalent


# --------------------------------------------------------------------------------------------------- phases

def _trainable(model: nn.Module, phase) -> set[str]:
    return set(_names(model)) - phase.frozen


def _check_cover(phases, epochs: int) -> None:
    assert phases[0].start == 1 and phases[-1].end == epochs
    for before, after in zip(phases, phases[1:]):
        assert after.start == before.end + 1 and before.start <= before.end


def test_plan_phases_full_is_one_phase(effnet):
    phases = plan_phases(effnet, layer_map(effnet), FinetuneConfig(), 3)
    assert len(phases) == 1 and (phases[0].start, phases[0].end) == (1, 3) and not phases[0].frozen


def test_plan_phases_freeze_epochs(effnet):
    phases = plan_phases(effnet, layer_map(effnet), FinetuneConfig(freeze_epochs=2), 5)
    assert [(p.start, p.end) for p in phases] == [(1, 2), (3, 5)]
    first, second = phases
    assert _trainable(effnet, first) == {"classifier.weight", "classifier.bias"}
    assert first.restart and second.restart and second.discriminative  # each phase its own schedule
    assert second.frozen == frozenset()


def test_plan_phases_freeze_epochs_keeps_the_frozen_stages(effnet):
    phases = plan_phases(effnet, layer_map(effnet), FinetuneConfig(freeze_epochs=1, frozen_stages=1), 3)
    assert phases[1].frozen == _under(effnet, "conv_stem", "bn1", "blocks.0")


def test_plan_phases_unfreeze_schedule(effnet):
    ft = FinetuneConfig(unfreeze_schedule={4: ("*",), 2: ("blocks.4", "conv_head", "bn2")})
    phases = plan_phases(effnet, layer_map(effnet), ft, 5)
    assert [(p.start, p.end) for p in phases] == [(1, 1), (2, 3), (4, 5)]
    assert _trainable(effnet, phases[0]) == _under(effnet, "classifier")
    assert _trainable(effnet, phases[1]) == _under(effnet, "classifier", "blocks.4", "conv_head", "bn2")
    assert _trainable(effnet, phases[2]) == set(_names(effnet))
    assert [p.discriminative for p in phases] == [False, True, True]


def test_plan_phases_unfreeze_schedule_keeps_the_frozen_stages(effnet):
    ft = FinetuneConfig(unfreeze_schedule={2: ("all",)}, frozen_stages=1)
    phases = plan_phases(effnet, layer_map(effnet), ft, 3)
    assert phases[-1].frozen == _under(effnet, "conv_stem", "bn1", "blocks.0")


def test_plan_phases_unfreeze_schedule_bad_pattern(effnet):
    ft = FinetuneConfig(unfreeze_schedule={2: ("blokcs.4",)})
    with pytest.raises(UserError, match=r"unfreeze_schedule\[2\]: pattern 'blokcs.4' matches no parameter"):
        plan_phases(effnet, layer_map(effnet), ft, 3)


@pytest.mark.parametrize("fixture, epochs", [("effnet", 4), ("effnet", 2), ("resnet", 7), ("mobilenet", 6)])
def test_plan_phases_gradual(fixture, epochs, request):
    model = request.getfixturevalue(fixture)
    lmap = layer_map(model)
    phases = plan_phases(model, lmap, FinetuneConfig(strategy="gradual"), epochs)
    _check_cover(phases, epochs)
    assert len(phases) >= 2
    assert _trainable(model, phases[0]) == set(lmap.stages[-1])  # the head group alone
    assert phases[-1].frozen == frozenset()  # everything trains at the end
    for before, after in zip(phases, phases[1:]):
        assert after.frozen < before.frozen  # strictly fewer frozen each phase
        # what unfreezes are whole stages, top-down
        unfrozen = before.frozen - after.frozen
        stages = [set(s) for s in lmap.stages if set(s) & unfrozen]
        assert set().union(*stages) == unfrozen
    # top-down: the deepest backbone stage unfreezes first
    assert set(lmap.stages[-2]) <= _trainable(model, phases[1])


def test_plan_phases_gradual_keeps_frozen_stages_frozen(effnet):
    lmap = layer_map(effnet)
    phases = plan_phases(effnet, lmap, FinetuneConfig(strategy="gradual", frozen_stages=1), 4)
    assert phases[-1].frozen == _under(effnet, "conv_stem", "bn1", "blocks.0")


@pytest.mark.parametrize("keys", [{"freeze_patterns": ("*",)},
                                  {"freeze": "all", "freeze_patterns": ("classifier",)},
                                  {"frozen_stages": 5, "freeze_patterns": ("conv_head", "bn2", "classifier")}])
def test_everything_frozen_is_user_error(effnet, keys):
    with pytest.raises(UserError, match="every parameter is frozen"):
        plan_phases(effnet, layer_map(effnet), FinetuneConfig(**keys), 2)


def test_apply_phase_switches_requires_grad():
    model = _timm(TINY_MODEL)
    phases = plan_phases(model, layer_map(model), FinetuneConfig(freeze_epochs=1), 2)
    apply_phase(model, phases[0])
    assert sum(p.requires_grad for p in model.parameters()) == 2
    apply_phase(model, phases[1])
    assert all(p.requires_grad for p in model.parameters())


def test_gradual_in_one_epoch_keeps_the_freeze_keys():
    model = _timm("test_efficientnet")
    lmap = layer_map(model)
    phases = plan_phases(model, lmap, FinetuneConfig(strategy="gradual", freeze_patterns=("conv_head",)), epochs=1)
    assert len(phases) == 1 and "conv_head.weight" in phases[0].frozen
    assert "classifier.weight" not in phases[0].frozen
