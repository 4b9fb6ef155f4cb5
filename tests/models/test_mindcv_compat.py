"""MindCV's own configs run unchanged: every key and value its 179 config files use is accepted, and every model
name it has maps to a timm or torchvision model that builds, or is refused with the reason (tests/data/mindcv)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunecv.config import ModelConfig, load_config
from tunecv.config.compat import MINDCV_KEYS
from tunecv.errors import UserError
from tunecv.models.factory import count_params, create_model
from tunecv.models.mindcv_names import NO_EQUIVALENT
from tunecv.models.names import resolve_model_name

DATA = Path(__file__).resolve().parents[1] / "data" / "mindcv"


def _rows(name: str) -> list[list[str]]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line and not line.startswith("#")]


CONFIG_MODELS = dict(_rows("config_models.tsv"))
KEY_VALUES = [(key, value) for key, values in _rows("config_keys.tsv") for value in json.loads(values)]
REGISTRY = [row[0] for row in _rows("registry_models.txt")]


def test_the_documented_key_list_is_the_one_mindcv_s_configs_use():
    assert sorted(MINDCV_KEYS) == sorted({key for key, _ in KEY_VALUES} | {"model"})


def test_the_lists_are_whole():
    assert len(CONFIG_MODELS) == 179 and len(set(CONFIG_MODELS.values())) == 158  # 2 of them older spellings
    assert len(KEY_VALUES) == 318 and len(REGISTRY) == 275


@pytest.mark.parametrize("key, value", KEY_VALUES, ids=[f"{k}={v}" for k, v in KEY_VALUES])
def test_every_key_and_value_of_mindcv_s_configs_is_accepted(tmp_path, key, value):
    if key == "data_dir" and not value:  # MindCV's placeholder: the path comes from the command line
        with pytest.raises(UserError, match="data_dir is not set; pass --data_dir DIR"):
            load_config(None, {key: value})
        return
    load_config(None, {"data_dir": str(tmp_path), key: value})


def _parameters(name: str) -> int:
    """Its parameter count for 1000 classes, built on the meta device (on the CPU where a build reads values)."""
    try:
        with torch.device("meta"):
            return count_params(create_model(ModelConfig(model=name), 1000, quiet=True))[1]
    except (RuntimeError, NotImplementedError):
        return count_params(create_model(ModelConfig(model=name), 1000, quiet=True))[1]


def _outcome(name: str) -> str:
    """'built' (with its parameter count checked positive) or the refusal."""
    try:
        resolve_model_name(name)
    except UserError as err:
        return str(err)
    assert _parameters(name) > 0
    return "built"


def test_every_model_mindcv_has_builds_or_has_no_equivalent():
    """The models of MindCV's config files and every model it registers, each built once."""
    outcomes = {name: _outcome(name) for name in sorted(set(CONFIG_MODELS.values()) | set(REGISTRY))}
    refused = {name: text for name, text in outcomes.items() if text != "built"}
    assert all("has no equivalent in timm or torchvision" in text and name.lower() in NO_EQUIVALENT
               for name, text in refused.items()), refused  # none falls through to "unknown model"
    config_refused = sorted(name for name in set(CONFIG_MODELS.values()) if name in refused)
    assert config_refused == ["cmt_small", "nasnet_a_4x1056", "pvt_large", "pvt_medium", "pvt_small", "pvt_tiny",
                              "repmlp_t224", "shufflenet_v1_g3_05", "shufflenet_v1_g3_10", "visformer_small_v2",
                              "visformer_tiny_v2"]
    assert sum(name not in refused for name in CONFIG_MODELS.values()) == 168  # of the 179 files


@pytest.mark.parametrize("name, timm_name, params", [
    ("BiT_resnet50", "resnetv2_50x1_bit", 25_549_352), ("rexnet_09", "rexnet_100", 4_091_257),
    ("resnext152_64x4d", "resnext101_64x4d", 114_971_944), ("repvgg_b1g2", "repvgg_b1", 45_782_376),
    ("mobilenet_v1_025", "mobilenetv1_100", 470_072), ("convit_tiny_plus", "convit_tiny", 9_972_912),
    ("mobilenet_v3_large_075", "mobilenet_v3_large", 3_377_576), ("regnet_x_600mf", "regnetx_006", 6_196_040),
])
def test_a_mapped_name_builds_mindcv_s_size_not_its_sibling_s(name, timm_name, params):
    """The counts are MindCV's trainable parameters (mindcv 0.3.0, 1000 classes)."""
    assert resolve_model_name(name)[1] == timm_name
    assert _parameters(name) == params


def test_a_variant_without_imagenet_weights_refuses_pretrained():
    from tunecv.models.names import check_model_options

    with pytest.raises(UserError, match="timm has no ImageNet weights for convit_tiny_plus .*set pretrained false"):
        check_model_options(ModelConfig(model="convit_tiny_plus", pretrained=True))
    check_model_options(ModelConfig(model="convit_tiny_plus", pretrained=True, ckpt_path="x.pth"))
