"""The frozen layers' outputs a recipe search keeps between its trials (a FeatureMemo passed to each run): the
second run with the same inputs computes none, trains as if it had; anything the outputs depend on changes the key;
only the latest run's outputs are kept; a run without a memo hashes nothing; a run that does not cache, or resumes,
empties the memo first; outputs under another key are released before the memory budget is measured."""

from __future__ import annotations

import os

import pytest
import torch

from conftest import TINY_MODEL, apply_freeze, run_config
from tunecv.config import FinetuneConfig, ModelConfig, load_config
from tunecv.data.datasets import ImageDataset
from tunecv.models.factory import create_model
from tunecv.scripts import finetune
from tunecv.tasks import classification
from tunecv.train import feature_cache, feature_memo
from tunecv.train.feature_cache import FeatureExtractor
from tunecv.train.feature_memo import FeatureMemo
from tunecv.utils.runtime import Compute

PROBE = {"freeze": "all", "no_aug": True, "hflip": 0.0}  # what cache_features: auto caches


@pytest.fixture
def extractions(monkeypatch) -> list[str]:
    """The descriptions of the feature passes that ran (each a pass of the frozen model over a loader)."""
    seen: list[str] = []
    original = FeatureExtractor.__call__

    def counted(self, loader, desc):
        seen.append(desc)
        return original(self, loader, desc)

    monkeypatch.setattr(FeatureExtractor, "__call__", counted)
    return seen


def test_a_second_run_on_the_same_frozen_layers_computes_no_features(tiny_overrides, tmp_path, extractions,
                                                                     caplog):
    memo = FeatureMemo()

    def run(name: str, **overrides):
        cfg = load_config(None, {**tiny_overrides, **PROBE, "lr": 0.05, "ckpt_save_dir": str(tmp_path / name),
                                 **overrides})
        return finetune.run(cfg, feature_memo=memo)

    first = run("first")
    assert extractions == ["train features 1/1", "val features 1/1"]
    caplog.set_level("INFO", logger="tunecv")
    again = run("again")
    assert extractions == ["train features 1/1", "val features 1/1"]  # none ran for the second run
    assert "feature cache: train, 1 view x 24 images x 256 features kept from an earlier run in this process" \
        in caplog.text
    assert again.history[0]["train_loss"] == pytest.approx(first.history[0]["train_loss"], abs=1e-6)
    assert again.history[0]["top1"] == first.history[0]["top1"]
    run("smoothed", label_smoothing=0.1, lr=0.01)  # another recipe for the same classifier inputs
    assert len(extractions) == 2
    run("other_images", image_resize=40)  # other inputs: computed again
    assert len(extractions) == 4


@pytest.fixture
def probe(tiny_image_folder):
    cfg = run_config({"data_dir": str(tiny_image_folder), "model": TINY_MODEL, "image_resize": 32, **PROBE})
    torch.manual_seed(0)
    model = create_model(ModelConfig(model=TINY_MODEL), num_classes=3)
    apply_freeze(model, FinetuneConfig(freeze="all"))
    samples = sorted((str(p), i) for i, folder in enumerate(sorted((tiny_image_folder / "train").iterdir()))
                     for p in folder.iterdir())
    dataset = ImageDataset(samples, ["circle", "square", "stripes"], None)
    return cfg, model, dataset


def _key(cfg, model, dataset, compute=Compute(torch.device("cpu")), transforms=("t",)):
    return feature_memo.features_key(model, compute, cfg, [dataset, None], list(transforms), None)


def test_the_key_holds_what_the_frozen_outputs_depend_on(probe):
    cfg, model, dataset = probe
    key = _key(cfg, model, dataset)
    assert key == _key(cfg, model, dataset)
    with torch.no_grad():
        model.classifier.weight.add_(1.0)  # it trains: its weights are not the features'
    assert _key(cfg, model, dataset) == key
    assert _key(cfg, model, dataset, transforms=("other",)) != key
    assert _key(cfg, model, dataset, compute=Compute(torch.device("cpu"), channels_last=True)) != key
    other_data = run_config({"data_dir": cfg.data.data_dir, "model": TINY_MODEL, "image_resize": 40, **PROBE})
    assert _key(other_data, model, dataset) != key
    path = dataset.samples[0][0]
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # an image written again
    assert _key(cfg, model, dataset) != key
    touched = _key(cfg, model, dataset)
    model.blocks[0][0].conv.weight.requires_grad_(True)  # a layer that trains is not in the frozen part
    assert _key(cfg, model, dataset) not in (key, touched)
    model.blocks[0][0].conv.weight.requires_grad_(False)
    with torch.no_grad():
        model.conv_stem.weight.mul_(1.01)  # other frozen weights
    assert _key(cfg, model, dataset) != touched
    assert feature_memo.features_key(model, Compute(torch.device("cpu")), cfg, [object()], [], None) is None


def test_only_the_latest_outputs_are_kept():
    memo = FeatureMemo()
    kept = memo.outputs_for("a")
    kept["train"] = (torch.zeros(4), torch.zeros(2), torch.zeros(2))
    assert memo.outputs_for("a") is kept and "train" in kept and memo.nbytes() == 32
    assert memo.outputs_for("b") == {} and memo.outputs_for("a") == {} and memo.nbytes() == 0
    memo.outputs_for("a")["train"] = kept["train"]
    assert memo.outputs_for(None) is None and memo.outputs_for("a") == {}  # an unknown run drops them
    memo.outputs_for("a")["train"] = kept["train"]
    memo.clear()
    assert memo.key is None and memo.outputs_for("a") == {}
    assert not [name for name, value in vars(feature_memo).items()  # the search's memo is the only one
                if not name.startswith("__") and isinstance(value, (dict, list, set, FeatureMemo))]


def _run(tiny_overrides, tmp_path, name: str, memo: FeatureMemo | None, **overrides):
    cfg = load_config(None, {**tiny_overrides, **PROBE, "ckpt_save_dir": str(tmp_path / name), **overrides})
    return finetune.run(cfg, feature_memo=memo)


def test_a_run_without_a_memo_hashes_nothing(tiny_overrides, tmp_path, extractions, monkeypatch):
    def refused(*args):
        raise AssertionError("a plain run hashed its frozen weights and files")

    monkeypatch.setattr(feature_cache, "features_key", refused)
    _run(tiny_overrides, tmp_path, "plain", None)
    assert extractions == ["train features 1/1", "val features 1/1"]  # cached, without a key


def test_a_run_without_the_feature_cache_empties_the_memo_before_its_caches(tiny_overrides, tmp_path, monkeypatch):
    memo = FeatureMemo()
    _run(tiny_overrides, tmp_path, "probe", memo)
    assert memo.key is not None and set(memo.outputs) == {"train", "val"}
    held_at_caches: list[bool] = []
    cache_images = classification._cache_images

    def spied(run, dataset, is_training):
        held_at_caches.append(bool(memo.outputs))
        return cache_images(run, dataset, is_training)

    monkeypatch.setattr(classification, "_cache_images", spied)
    _run(tiny_overrides, tmp_path, "full", memo, freeze="none")  # a full fine-tune: nothing to cache
    assert held_at_caches == [False, False] and memo.key is None and memo.outputs == {}


def test_outputs_under_another_key_are_released_before_the_memory_budget(tiny_overrides, tmp_path, monkeypatch,
                                                                         extractions):
    memo = FeatureMemo()
    memo.outputs_for("an earlier trial's")["train"] = (torch.zeros(1000), torch.zeros(10), torch.zeros(10))
    held_at_budget: list[int] = []
    budget = feature_cache.stored_outputs_budget

    def spied(compute):
        held_at_budget.append(memo.nbytes())
        return budget(compute)

    monkeypatch.setattr(feature_cache, "stored_outputs_budget", spied)
    prefix = {"freeze": "head_only"}  # the layers after a frozen prefix train: their inputs are budgeted
    _run(tiny_overrides, tmp_path, "first", memo, **prefix)
    assert held_at_budget == [0] and len(extractions) == 2
    _run(tiny_overrides, tmp_path, "second", memo, **prefix, lr=0.01)  # reads what it needs: nothing new to fit
    assert held_at_budget == [0] and len(extractions) == 2


def test_a_resumed_run_computes_its_features_from_its_checkpoint(tiny_overrides, tmp_path, extractions):
    memo = FeatureMemo()
    _run(tiny_overrides, tmp_path, "run", memo)
    assert len(extractions) == 2 and memo.key is not None
    _run(tiny_overrides, tmp_path, "run", memo, epoch_size=2, resume="auto")  # its weights load after the key
    assert len(extractions) == 4 and memo.key is None
