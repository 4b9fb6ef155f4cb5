"""Frozen-backbone feature cache: when it is used, that the cached classifier inputs are the model's own, flip
views, and end to end that a cached linear probe trains like the uncached one and writes checkpoints
validate.py reads."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import CLASSES, TINY_MODEL, TRAIN_PER_CLASS, VAL_PER_CLASS, prepared, write_image_folder
from tunecv.config import load_config
from tunecv.data.transforms import create_transforms
from tunecv.errors import UserError
from tunecv.models.factory import create_model
from tunecv.scripts import finetune
from tunecv.tasks.classification import Classification
from tunecv.train.engine import evaluate
from tunecv.train.feature_cache import FeatureHead, FeatureLoader, dropout_rate, flip_views
from tunecv.train.frozen_prefix import PrefixSkipped

ROOT = Path(__file__).resolve().parents[2]
# one intra-op thread: on a shared 2-core machine more threads only contend (see conftest)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PROBE = {"freeze": "all", "no_aug": True}  # the run cache_features: auto caches
TRAIN_IMAGES = len(CLASSES) * TRAIN_PER_CLASS


def _decide(tmp_path: Path, **overrides) -> bool:
    cfg = load_config(None, {"data_dir": str(tmp_path), "model": TINY_MODEL, "pretrained": False, "epoch_size": 2,
                             **overrides})
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=3))
    task = Classification()
    return task.resolve_caches(cfg, task.plan_phases(cfg, 3), world_size=1)[0]


@pytest.mark.parametrize("overrides, expected", [
    (PROBE, True),
    ({"strategy": "linear_probe", "no_aug": True}, True),
    ({**PROBE, "cache_features": "true"}, True),
    ({**PROBE, "hflip": 0.5, "vflip": 0.5}, True),  # flips are views, computed once each
    ({**PROBE, "cache_features": "false"}, False),
    ({"freeze": "all"}, False),  # random augmentation: auto does not cache
    ({"freeze": "all", "feature_views": 3, "cache_features": "true"}, True),
    ({"no_aug": True}, False),  # everything trains
    ({"no_aug": True, "freeze": "head_only"}, True),  # a frozen prefix: the head group trains on its output
    ({"no_aug": True, "freeze_epochs": 1}, False),  # the head alone in epoch 1, then everything
    ({**PROBE, "freeze_bn": False}, False),
    ({**PROBE, "mixup": 0.2}, False),
    ({**PROBE, "cutmix": 1.0}, False),
    ({**PROBE, "ema": True}, False),
    ({**PROBE, "freeze_patterns": ["blocks.0"], "freeze": "none"}, False),
])
def test_when_features_are_cached(tmp_path, overrides, expected):
    if expected is None:
        cfg = load_config(None, {"data_dir": str(tmp_path), "model": TINY_MODEL, "pretrained": False, **overrides})
        model = create_model(cfg.model, num_classes=3)
        frozen = Classification().plan_phases(cfg, 3)[0].frozen
        below = [n for n, _ in model.named_parameters() if n not in frozen and not n.startswith("classifier.")]
        expected = not below
    assert _decide(tmp_path, **overrides) is expected


@pytest.mark.parametrize("overrides, message", [
    ({"no_aug": True, "cache_features": "true"}, "the stem trains"),
    ({"no_aug": True, "freeze_epochs": 1, "cache_features": "true"}, "layers unfreeze during the run"),
    ({**PROBE, "freeze_bn": False, "cache_features": "true"}, "freeze_bn: false"),
    ({**PROBE, "mixup": 0.2, "cache_features": "true"}, "mixup/cutmix"),
    ({**PROBE, "ema": True, "cache_features": "true"}, "ema"),
    ({"freeze": "all", "cache_features": "true"}, "needs feature_views"),
])
def test_cache_features_true_refuses_what_it_cannot_do(tmp_path, overrides, message):
    with pytest.raises(UserError, match=re.escape(message)) as err:
        _decide(tmp_path, **overrides)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, message", [
    ({"freeze": "all", "feature_views": 3}, "feature_views counts the augmented views"),  # only `true` uses them
    ({**PROBE, "feature_views": 3, "cache_features": "true"}, "feature_views counts the augmented views"),
    ({**PROBE, "re_prob": 0.25}, "no_aug trains on the evaluation transform"),
    ({**PROBE, "auto_augment": "rand-m9-mstd0.5"}, "no_aug trains on the evaluation transform"),
    ({"cache_images": "ram", "cache_ram_gb": 2}, "cache_ram_gb is the RAM budget of cache_images: auto"),
    ({"cache_images": "none", "cache_dir": "x"}, "cache_dir holds disk caches"),
])
def test_keys_that_would_do_nothing_are_rejected(tmp_path, overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_config(None, {"data_dir": str(tmp_path), "model": TINY_MODEL, **overrides})


def test_dropout_rate_is_read_from_training_mode_features():
    features = torch.rand(2, 512) + 0.1
    assert dropout_rate(features, features.clone()) == 0.0
    mask = (torch.rand(features.shape, generator=torch.Generator().manual_seed(0)) > 0.3).float()
    assert dropout_rate(features, features * mask / 0.7) == pytest.approx(0.3, abs=1e-3)
    assert dropout_rate(features, features + 0.05 * torch.randn(features.shape)) is None  # noise, not a dropout
    assert dropout_rate(features, features * 2.0) is None  # a scale without dropped units


def test_the_models_dropout_before_the_classifier_is_kept(tiny_overrides):
    setup = _prepare(tiny_overrides, **PROBE, hflip=0.0, drop_rate=0.3)
    assert isinstance(setup.forward_model, FeatureHead) and setup.forward_model.drop_rate == pytest.approx(0.3)


def test_a_model_whose_output_is_not_its_classifier_falls_back_or_refuses(tiny_overrides, tmp_path):
    """squeezenet's classifier is a 1x1 conv whose output is pooled afterwards: nothing to cache."""
    options = {**tiny_overrides, **PROBE, "model": "squeezenet1_1", "image_resize": 64}
    setup = prepared(load_config(None, options))
    assert setup.forward_model is setup.model and isinstance(setup.train_loader, DataLoader)
    with pytest.raises(UserError, match="cache_features: true, but SqueezeNet's output is not its classifier"):
        prepared(load_config(None, {**options, "cache_features": "true"}))


def test_flip_views_and_their_rates():
    assert flip_views(0.0, 0.0)[0] == [(0, 0)]
    assert flip_views(0.5, 0.0)[0] == [(0, 0), (1, 0)]
    assert flip_views(0.0, 0.3)[0] == [(0, 0), (0, 1)]
    combos, pick = flip_views(0.5, 0.2)
    assert combos == [(0, 0), (0, 1), (1, 0), (1, 1)]
    views = pick(1, 20_000, torch.Generator().manual_seed(0))
    assert views.dtype == torch.long and views.shape == (20_000,)
    horizontal = torch.tensor([combos[v][0] for v in views.tolist()], dtype=torch.float)
    vertical = torch.tensor([combos[v][1] for v in views.tolist()], dtype=torch.float)
    assert horizontal.mean().item() == pytest.approx(0.5, abs=0.02)
    assert vertical.mean().item() == pytest.approx(0.2, abs=0.02)
    assert set(views.tolist()) == {0, 1, 2, 3}
    _, only_h = flip_views(0.25, 0.0)
    draws = only_h(1, 20_000, torch.Generator().manual_seed(1))
    assert set(draws.tolist()) == {0, 1} and draws.float().mean().item() == pytest.approx(0.25, abs=0.02)
    _, never = flip_views(0.0, 0.0)
    assert not never(1, 100, torch.Generator()).any()


def _prepare(tiny_overrides: dict, **overrides):
    return prepared(load_config(None, {**tiny_overrides, **overrides}))


def _pooled(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The classifier's input, computed the way timm does it (not through the cache's hook)."""
    model.eval()
    with torch.no_grad():
        return model.forward_head(model.forward_features(images), pre_logits=True)


def test_cached_features_are_the_classifier_inputs(tiny_overrides):
    setup = _prepare(tiny_overrides, **PROBE, hflip=0.0)
    assert isinstance(setup.forward_model, FeatureHead) and setup.forward_model.classifier is setup.model.classifier
    assert isinstance(setup.train_loader, FeatureLoader) and isinstance(setup.val_loader, FeatureLoader)
    assert len(setup.train_loader) == TRAIN_IMAGES // 4 and len(setup.val_loader) == 3

    plain = _prepare(tiny_overrides, **PROBE, hflip=0.0, cache_features="false")
    assert isinstance(plain.train_loader, DataLoader) and plain.forward_model is plain.model
    assert len(plain.train_loader) == len(setup.train_loader)
    # cache_images: auto caches pixels for the image pipeline only (the feature pass reads each image once)
    assert setup.train_set.image_cache is None and setup.val_set.image_cache is None
    assert plain.train_set.image_cache.storage == plain.val_set.image_cache.storage == "ram"
    # same init (same seed): the cached head on cached features = the whole model on images
    assert all(torch.equal(a, b) for a, b in zip(setup.model.state_dict().values(),
                                                 plain.model.state_dict().values()))
    cached_eval = evaluate(setup.forward_model, setup.val_loader, setup.compute, len(CLASSES))
    plain_eval = evaluate(plain.model, plain.val_loader, plain.compute, len(CLASSES))
    assert cached_eval.images == plain_eval.images == len(CLASSES) * VAL_PER_CLASS
    assert cached_eval.indices == plain_eval.indices and cached_eval.targets == plain_eval.targets
    assert cached_eval.predictions == plain_eval.predictions and cached_eval.top1 == plain_eval.top1
    assert cached_eval.loss == pytest.approx(plain_eval.loss, abs=1e-5)
    assert cached_eval.scores == pytest.approx(plain_eval.scores, abs=1e-5)

    transform = create_transforms(setup.cfg.data, is_training=False)
    seen = set()
    for features, labels, indices in setup.train_loader:
        assert features.shape == (4, setup.model.num_features) and features.dtype == torch.float32
        images = torch.stack([transform(setup.train_set.load_image(i)) for i in indices.tolist()])
        assert torch.allclose(features, _pooled(setup.model, images), atol=1e-5)
        assert labels.tolist() == [setup.train_set.targets[i] for i in indices.tolist()]
        seen.update(indices.tolist())
    assert seen == set(range(TRAIN_IMAGES))  # every image once per epoch


@pytest.mark.parametrize("workers, sampler", [(0, "none"), (2, "none"), (2, "balanced")])
def test_image_loader_order_is_kept(tiny_overrides, workers, sampler):
    """Same seed, same shuffling: the cached loader yields the images in the uncached loader's order, every
    epoch (else cache_features: auto changes a run's result), also when the image loader keeps its workers."""
    options = {**PROBE, "hflip": 0.0, "num_parallel_workers": workers, "sampler": sampler}
    cached = _prepare(tiny_overrides, **options)
    plain = _prepare(tiny_overrides, **options, cache_features="false")
    for epoch in (1, 2, 3):
        if sampler == "balanced":  # drawn with replacement: compare the orders only
            assert [i for b in cached.train_loader for i in b[2].tolist()] == \
                [i for b in plain.train_loader for i in b[2].tolist()], f"epoch {epoch}"
            continue
        cached_order = [i for batch in cached.train_loader for i in batch[2].tolist()]
        plain_order = [i for batch in plain.train_loader for i in batch[2].tolist()]
        assert sorted(cached_order) == sorted(plain_order) == list(range(TRAIN_IMAGES))
        assert cached_order == plain_order, f"epoch {epoch}"


def test_without_shuffle_the_cached_probe_trains_like_the_uncached(tiny_overrides, tmp_path):
    results = {}
    for mode in ("true", "false"):
        cfg = load_config(None, {**tiny_overrides, **PROBE, "hflip": 0.0, "shuffle": False, "epoch_size": 2,
                                 "lr": 0.05, "cache_features": mode, "ckpt_save_dir": str(tmp_path / mode)})
        results[mode] = finetune.run(cfg)
    cached, plain = results["true"], results["false"]
    for a, b in zip(cached.history, plain.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5) and a["top1"] == b["top1"]
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    weights = [torch.load(Path(r.best.path), weights_only=True)["model"] for r in (cached, plain)]
    for key in weights[1]:
        assert torch.allclose(weights[0][key].float(), weights[1][key].float(), atol=1e-5), key


def test_flip_views_are_the_flipped_images(tiny_overrides):
    setup = _prepare(tiny_overrides, **PROBE, hflip=0.5, val_while_train=False)
    loader = setup.train_loader
    assert isinstance(loader, FeatureLoader) and loader.num_views == 2 and setup.val_loader is None
    loader.compute()
    assert loader.features.shape == (2, TRAIN_IMAGES, setup.model.num_features)
    transform = create_transforms(setup.cfg.data, is_training=False)
    images = torch.stack([transform(setup.train_set.load_image(i)) for i in loader.indices.tolist()])
    unflipped, flipped = _pooled(setup.model, images), _pooled(setup.model, images.flip(-1))
    assert torch.allclose(loader.features[0], unflipped, atol=1e-5)
    assert torch.allclose(loader.features[1], flipped, atol=1e-5)
    assert all(not torch.allclose(a, b, atol=1e-3) for a, b in zip(loader.features[0], loader.features[1]))

    # each epoch draws a view per image: about half of what trains is flipped, both views occur for an image
    by_index = {int(i): row for row, i in enumerate(loader.indices.tolist())}
    chosen: dict[int, set[int]] = {}
    flips = total = 0
    for epoch in range(1, 7):
        loader.sampler.set_epoch(epoch)  # as fit does: the views are drawn per epoch
        for features, _, indices in loader:
            for feature, index in zip(features, indices.tolist()):
                row = by_index[index]
                view = 1 if torch.equal(feature, loader.features[1, row]) else 0
                assert torch.equal(feature, loader.features[view, row])
                chosen.setdefault(index, set()).add(view)
                flips, total = flips + view, total + 1
    assert total == 6 * TRAIN_IMAGES
    assert 0.3 < flips / total < 0.7
    assert sum(len(views) == 2 for views in chosen.values()) > TRAIN_IMAGES // 2


# end to end, through the scripts ---------------------------------------------------------------------------


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=300)


def _finetune(data_dir: Path, out: Path, *extra: str, freeze: str = "all") -> subprocess.CompletedProcess:
    return _run("finetune.py", "--data_dir", str(data_dir), "--model", TINY_MODEL, "--pretrained", "false",
                "--image_resize", "32", "--batch_size", "4", "--epoch_size", "3", "--lr", "0.05",
                "--num_parallel_workers", "0", "--device", "cpu", "--seed", "7", "--freeze", freeze,
                "--no_aug", "true", "--hflip", "0", "--ckpt_save_dir", str(out), *extra)


def _rows(out: Path) -> tuple[list[list[str]], str]:
    lines = (out / "results.txt").read_text().splitlines()
    return [line.split() for line in lines[1:-1]], lines[-1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("features") / "images")


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory) -> dict[str, Path]:
    outs = {}
    for mode in ("true", "false"):
        out = tmp_path_factory.mktemp(f"cache_{mode}") / "ckpt"
        proc = _finetune(data_dir, out, "--cache_features", mode)
        assert proc.returncode == 0, proc.stderr[-3000:]
        log = (out / "train.log").read_text()
        assert ("the classifier trains on the frozen layers' outputs" in log) == (mode == "true")
        outs[mode] = out
    return outs


def test_cached_linear_probe_matches_uncached(runs):
    cached_rows, cached_best = _rows(runs["true"])
    plain_rows, plain_best = _rows(runs["false"])
    assert len(cached_rows) == len(plain_rows) == 3
    for cached, plain in zip(cached_rows, plain_rows):
        assert cached[:2] == plain[:2]  # epoch, lr
        assert float(cached[2]) == pytest.approx(float(plain[2]), abs=2e-4)  # train_loss
        assert float(cached[3]) == pytest.approx(float(plain[3]), abs=2e-4)  # val_loss
        assert cached[4:6] == plain[4:6]  # top1, top5
    assert cached_best == plain_best

    cached, plain = (torch.load(out / f"{TINY_MODEL}_best.pth", weights_only=True) for out in
                     (runs["true"], runs["false"]))
    assert cached["epoch"] == plain["epoch"] and cached["classes"] == plain["classes"]
    assert cached["model"].keys() == plain["model"].keys()
    for key, value in plain["model"].items():
        if key.startswith("classifier."):
            assert torch.allclose(cached["model"][key], value, atol=1e-4), key
        else:  # the frozen backbone and its BatchNorm statistics: untouched in both
            assert torch.equal(cached["model"][key], value), key


def test_checkpoint_of_a_cached_run_validates(runs):
    out = runs["true"]
    best_top1 = _rows(out)[1].split()[2]
    proc = _run("validate.py", "--ckpt_path", str(out / f"{TINY_MODEL}_best.pth"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = re.search(r"(\d+) images: loss \S+  top1 (\d+\.\d\d)", proc.stdout)
    assert match, proc.stdout
    assert int(match.group(1)) == len(CLASSES) * VAL_PER_CLASS and match.group(2) == best_top1


def test_cache_features_true_with_two_phases_is_a_user_error(data_dir, tmp_path):
    out = tmp_path / "ckpt"
    proc = _finetune(data_dir, out, "--cache_features", "true", "--freeze_epochs", "1", freeze="none")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("tunecv: error: cache_features: true, but layers unfreeze during the run")
    assert proc.stderr.rstrip().splitlines()[-1] == errors[0]
    assert not list(out.glob("*.pth"))



@pytest.mark.parametrize("model", [TINY_MODEL, "test_resnet", "test_convnext"])
def test_a_frozen_prefix_is_run_once_and_trains_like_the_uncached(tiny_overrides, tmp_path, model):
    """frozen_stages: the frozen stem and stages run once per image; the rest trains on their stored output,
    with the same batches, to the same weights as without the cache."""
    results = {}
    for mode in ("auto", "false"):
        cfg = load_config(None, {**tiny_overrides, "model": model, "no_aug": True, "hflip": 0.0, "frozen_stages": 1,
                                 "epoch_size": 2, "lr": 0.01, "cache_features": mode,
                                 "ckpt_save_dir": str(tmp_path / mode)})
        setup = prepared(cfg)
        assert isinstance(setup.forward_model, PrefixSkipped) == (mode == "auto")
        results[mode] = finetune.run(cfg)
    cached, plain = results["auto"], results["false"]
    for a, b in zip(cached.history, plain.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4) and a["top1"] == b["top1"]
    weights = [torch.load(Path(r.best.path), weights_only=True)["model"] for r in (cached, plain)]
    for key in weights[1]:
        assert torch.allclose(weights[0][key].float(), weights[1][key].float(), atol=1e-4), key


def test_a_prefix_the_model_cannot_resume_from_is_not_cached(tiny_overrides):
    """A ViT adds the class token and position embeddings between its stem and its blocks: no clean cut."""
    options = {**tiny_overrides, "model": "test_vit", "image_resize": 160, "no_aug": True, "frozen_stages": 0}
    setup = prepared(load_config(None, options))
    assert setup.forward_model is setup.model
    with pytest.raises(UserError, match="cache_features: true, but the model does"):
        prepared(load_config(None, {**options, "cache_features": "true"}))


def test_no_decodable_training_image_is_one_sentence_before_any_cache(tiny_overrides, tiny_image_folder):
    """Files cut short mid-way: the start-up scan decodes them, so the run stops there, before any cache."""
    for path in (tiny_image_folder / "train").rglob("*.png"):
        data = path.read_bytes()
        path.write_bytes(data[:max(40, len(data) // 2)])  # the header stays whole, the pixels do not
    with pytest.raises(UserError, match="has no readable images; fix or remove its files"):
        _prepare(tiny_overrides, **PROBE, hflip=0.0, cache_features="true")
