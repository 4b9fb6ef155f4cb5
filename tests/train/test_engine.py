"""Engine: evaluate's metrics on known logits; train_one_epoch with a frozen backbone; fit's bookkeeping."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest
import torch
from torch import nn

from conftest import TINY_MODEL, apply_freeze
from tunecv.config import Config, FinetuneConfig, ModelConfig, OptimConfig, TrainConfig
from tunecv.finetune.phases import Phase
from tunecv.models.factory import create_model
from tunecv.report.results import RESULTS_HEADER, ResultsWriter
from tunecv.resolve import Run
from tunecv.scripts.finetune import create_plan
from tunecv.tasks.classification import Classification
from tunecv.train.checkpoint import CheckpointSaver, load_checkpoint
from tunecv.train.engine import Compute, NonFiniteLoss, create_trainer, evaluate, train_one_epoch
from tunecv.train.loop import Pipeline, fit
from tunecv.train.state import start_state

CPU = torch.device("cpu")


class FixedLogits(nn.Module):
    """Returns row `x[i, 0]` of a fixed logit table: the model's outputs are known exactly."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0].long()]


def _batches(indices: list[int], targets: list[int], batch_size: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x = torch.tensor(indices, dtype=torch.float32)[:, None]
    y = torch.tensor(targets)
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(indices), batch_size)]


def test_evaluate_top1_top5_with_known_logits():
    table = torch.tensor([
        [9.0, 1, 0, 0, 0, 0, 0],  # target 0 ranked 1st
        [9.0, 5, 0, 0, 0, 0, 0],  # target 1 ranked 2nd
        [6.0, 5, 0, 4, 3, 2, 1],  # target 2 ranked 7th (last)
        [6.0, 5, 4, 2, 3, 1, 0],  # target 3 ranked 5th
    ])
    result = evaluate(FixedLogits(table), _batches([0, 1, 2, 3], [0, 1, 2, 3]), Compute(CPU), num_classes=7)
    assert result.topk == 5
    assert result.top1 == pytest.approx(25.0)
    assert result.top5 == pytest.approx(75.0)
    assert result.images == 4
    assert result.predictions == [0, 0, 0, 0] and result.targets == [0, 1, 2, 3]
    probs = table.softmax(dim=1)
    assert result.scores == pytest.approx(probs.max(dim=1).values.tolist())
    expected_loss = nn.functional.cross_entropy(table, torch.tensor([0, 1, 2, 3])).item()
    assert result.loss == pytest.approx(expected_loss)


def test_evaluate_top5_capped_at_num_classes():
    table = torch.tensor([[0.0, 1, 2], [2.0, 1, 0], [0.0, 2, 1]])
    result = evaluate(FixedLogits(table), _batches([0, 1, 2], [0, 0, 0]), Compute(CPU), num_classes=3)
    assert result.topk == 3
    assert result.top1 == pytest.approx(100 / 3)
    assert result.top5 == pytest.approx(100.0)  # top-3 of 3 classes always hits


def test_evaluate_puts_model_in_eval_mode():
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2), nn.Dropout(0.99))
    model.train()
    first = evaluate(model, _batches([1, 2], [0, 1]), Compute(CPU), num_classes=2)
    second = evaluate(model, _batches([1, 2], [0, 1]), Compute(CPU), num_classes=2)
    assert not model.training and first.scores == second.scores


def test_amp_on_cpu_is_fp32():
    compute = Compute.create(CPU, "O3", channels_last=False)
    assert compute.dtype is None and compute.describe() == "cpu, fp32"


def test_channels_last_gives_the_same_evaluation():
    loader = _image_batches(count=2)
    plain = evaluate(_tiny(), loader, Compute(CPU), num_classes=3)
    compute = Compute(CPU, channels_last=True)
    model = compute.prepare_model(_tiny())
    assert model.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    fast = evaluate(model, loader, compute, num_classes=3)
    assert fast.predictions == plain.predictions
    assert fast.scores == pytest.approx(plain.scores, abs=1e-5)


def _tiny(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return create_model(ModelConfig(model=TINY_MODEL), num_classes=num_classes)


def _image_batches(count: int = 3, batch_size: int = 4, num_classes: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch_size, 3, 32, 32, generator=generator),
             torch.randint(0, num_classes, (batch_size,), generator=generator)) for _ in range(count)]


def _train(model: nn.Module, loader, train_cfg: TrainConfig = TrainConfig(), epochs: int = 1):
    steps = math.ceil(len(loader) / train_cfg.gradient_accumulation_steps)
    cfg = Config(optim=OptimConfig(opt="sgd", lr=0.5, weight_decay=0.01),
                 train=dataclasses.replace(train_cfg, epoch_size=epochs))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    run = Run(cfg, ("a", "b", "c"), (Phase(1, epochs, frozenset(frozen)),))
    plan = create_plan(Classification(), run, model, steps)
    optimizer, scheduler = plan.enter(1)
    trainer = create_trainer(model, train_cfg, Compute(CPU), None, class_counts=[1, 1, 1])
    return plan, optimizer, scheduler, trainer


def _fit(model, train_loader, val_loader, plan, cfg: TrainConfig, saver, results, trainer):
    """The shared train loop on a classifier, its best chosen by top-1 (the resolved best_metric)."""
    pipeline = Pipeline(model, model, None, None, train_loader, val_loader, trainer, "", "")
    state = start_state(None, model, trainer, plan, saver)
    return fit(Classification(), pipeline, plan, dataclasses.replace(cfg, best_metric="top1"), saver, results, state)


def _train_frozen(freeze_bn: bool):
    """One epoch with the backbone frozen: (state before, state after, stats, trainer)."""
    model = _tiny()
    apply_freeze(model, FinetuneConfig(freeze="all"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = _image_batches()
    _, optimizer, scheduler, trainer = _train(model, loader)
    trainer.freeze_bn = freeze_bn
    stats = train_one_epoch(model, loader, optimizer, scheduler, trainer, epoch=1)
    return before, model.state_dict(), stats, trainer


def test_train_one_epoch_frozen_backbone_is_bit_identical():
    before, after, stats, trainer = _train_frozen(freeze_bn=True)
    body = [k for k in before if not k.startswith("classifier.")]
    assert any("running_mean" in k for k in body) and any("num_batches_tracked" in k for k in body)
    for key in body:  # parameters and BatchNorm buffers
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert stats.images == 12 and math.isfinite(stats.loss) and trainer.global_step == 3


def test_freeze_bn_false_lets_frozen_batchnorm_statistics_adapt():
    before, after, _, _ = _train_frozen(freeze_bn=False)
    assert not torch.equal(before["bn1.running_mean"], after["bn1.running_mean"])  # statistics follow the data
    assert torch.equal(before["bn1.weight"], after["bn1.weight"])  # the frozen parameters do not move
    assert torch.equal(before["conv_stem.weight"], after["conv_stem.weight"])


def test_train_one_epoch_unfrozen_updates_batchnorm_statistics():
    # the control for the test above: without freezing, the same step does change the backbone's buffers
    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = _image_batches()
    _, optimizer, scheduler, trainer = _train(model, loader)
    train_one_epoch(model, loader, optimizer, scheduler, trainer, epoch=1)
    assert not torch.equal(before["bn1.running_mean"], model.state_dict()["bn1.running_mean"])
    assert not torch.equal(before["conv_stem.weight"], model.conv_stem.weight)


def test_gradient_accumulation_steps_the_optimizer_less_often():
    model = _tiny()
    loader = _image_batches(count=5)
    _, optimizer, scheduler, trainer = _train(model, loader, TrainConfig(gradient_accumulation_steps=2))
    train_one_epoch(model, loader, optimizer, scheduler, trainer, epoch=1)
    assert trainer.global_step == 3  # ceil(5 / 2): the last partial group also steps
    assert scheduler.last_epoch == 3


def test_fit_validates_at_interval_and_writes_reports(tmp_path):
    model = _tiny()
    train_loader, val_loader = _image_batches(count=2), _image_batches(count=1, seed=1)
    cfg = TrainConfig(epoch_size=3, val_interval=2, ckpt_save_dir=str(tmp_path))
    plan, _, _, trainer = _train(model, train_loader, cfg, epochs=3)
    saver = CheckpointSaver(tmp_path, TINY_MODEL, {"model": TINY_MODEL}, ["a", "b", "c"])
    result = _fit(model, train_loader, val_loader, plan, cfg, saver, ResultsWriter(tmp_path), trainer)
    assert [m["top1"] is not None for m in result.history] == [False, True, True]  # epoch 2 and the last
    rows = (tmp_path / "results.txt").read_text().splitlines()
    assert rows[0] == RESULTS_HEADER and len(rows) == 5
    assert rows[1].split()[3:6] == ["-", "-", "-"]
    validated = [m for m in result.history if m["top1"] is not None]
    best = max(validated, key=lambda m: m["top1"])
    assert result.best.epoch == min(m["epoch"] for m in validated if m["top1"] == best["top1"])
    assert rows[-1] == f"best top1 {result.best.value:.2f} at epoch {result.best.epoch}"
    assert load_checkpoint(result.best.path)["epoch"] == result.best.epoch
    assert load_checkpoint(result.last_path)["epoch"] == 3


class _SlowBatches(list):
    """Validation batches that take `seconds` each to load."""

    def __init__(self, batches: list, seconds: float) -> None:
        super().__init__(batches)
        self.seconds = seconds

    def __iter__(self):
        for batch in super().__iter__():
            time.sleep(self.seconds)
            yield batch


def test_an_epochs_time_includes_its_validation(tmp_path):
    model = _tiny()
    train_loader, val_loader = _image_batches(count=1), _SlowBatches(_image_batches(count=2, seed=1), 0.25)
    cfg = TrainConfig(epoch_size=1, ckpt_save_dir=str(tmp_path))
    plan, _, _, trainer = _train(model, train_loader, cfg)
    saver = CheckpointSaver(tmp_path, TINY_MODEL, {}, ["a", "b", "c"])
    result = _fit(model, train_loader, val_loader, plan, cfg, saver, ResultsWriter(tmp_path), trainer)
    assert result.history[0]["time_s"] >= 0.5  # the two validation batches' wait is part of the epoch


class _NanInEpoch:
    """The same batches every epoch, but for `bad_epoch`, whose images are nan (a diverging run)."""

    def __init__(self, batches: list, bad_epoch: int) -> None:
        self.batches, self.bad_epoch, self.epochs = batches, bad_epoch, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        self.epochs += 1
        for images, labels in self.batches:
            yield (images * float("nan") if self.epochs == self.bad_epoch else images), labels


def test_a_failed_run_draws_the_rows_it_wrote(tmp_path):
    """curves.png is spaced out for fast epochs: the rows since the last drawing are drawn when the run fails."""
    model = _tiny()
    loader = _NanInEpoch(_image_batches(count=2), bad_epoch=3)
    cfg = TrainConfig(epoch_size=3, ckpt_save_dir=str(tmp_path))
    plan, _, _, trainer = _train(model, loader, cfg, epochs=3)
    results = ResultsWriter(tmp_path)
    with pytest.raises(NonFiniteLoss):
        _fit(model, loader, None, plan, cfg, CheckpointSaver(tmp_path, TINY_MODEL, {}, ["a", "b", "c"]), results,
             trainer)
    assert len(results.rows) == 2 and not results.undrawn  # epoch 2 came milliseconds after epoch 1's drawing


def test_fit_with_ema_keeps_the_averaged_weights_as_their_own_best(tmp_path):
    model = _tiny()
    loader = _image_batches(count=2)
    cfg = dataclasses.replace(TrainConfig(), epoch_size=2, ema=True, ema_decay=0.5)
    plan, _, _, trainer = _train(model, loader, cfg, epochs=2)
    saver = CheckpointSaver(tmp_path, TINY_MODEL, {}, ["a", "b", "c"])
    result = _fit(model, loader, loader, plan, cfg, saver, ResultsWriter(tmp_path, ema=True), trainer)
    ema_saved = load_checkpoint(result.ema.path)
    assert result.ema.path == str(saver.ema_best_path) and ema_saved["weights"] == "ema"
    raw_saved = load_checkpoint(result.last_path)
    assert torch.equal(raw_saved["model"]["classifier.weight"], model.classifier.weight)
    assert torch.equal(raw_saved["model_ema"]["classifier.weight"], trainer.ema.module.classifier.weight)
    assert not torch.equal(model.classifier.weight, trainer.ema.module.classifier.weight)
    assert all(m["ema_top1"] is not None for m in result.history)
    rows = (tmp_path / "results.txt").read_text().splitlines()
    assert rows[0].endswith(" ema_top1") and len(rows[1].split()) == len(rows[0].split())
    assert ema_saved["epoch"] == result.ema.epoch
    assert ema_saved["best_metric"] == ema_saved["metrics"]["top1"] == max(m["ema_top1"] for m in result.history)
    assert rows[-1] == f"best ema_top1 {result.ema.value:.2f} at epoch {result.ema.epoch}"


def test_fit_with_ema_without_val_set_keeps_the_last_epoch(tmp_path):
    model = _tiny()
    loader = _image_batches(count=2)
    cfg = dataclasses.replace(TrainConfig(), epoch_size=1, ema=True, ema_decay=0.5)
    plan, _, _, trainer = _train(model, loader, cfg)
    saver = CheckpointSaver(tmp_path, TINY_MODEL, {}, ["a", "b", "c"])
    result = _fit(model, loader, None, plan, cfg, saver, ResultsWriter(tmp_path), trainer)
    saved = load_checkpoint(result.ema.path)["model"]
    assert torch.equal(saved["classifier.weight"], trainer.ema.module.classifier.weight)
    assert not torch.equal(saved["classifier.weight"], model.classifier.weight)
    assert result.best.value is None and result.best.epoch == 1  # no validation set: the last epoch is best


def test_an_overflowing_fp16_step_is_skipped_and_counted():
    """The GradScaler (fp16 AMP) skips a step whose gradients are inf and lowers its scale; tunecv counts it."""
    from tunecv.train.engine import Trainer, optimizer_step

    layer = nn.Linear(2, 1)
    before = layer.weight.detach().clone()
    scaler = torch.amp.GradScaler("cpu")
    trainer = Trainer(loss_fn=None, compute=Compute(torch.device("cpu")), num_classes=2, scaler=scaler)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    scaler.scale(layer(torch.tensor([[float("inf"), 1.0]])).sum()).backward()
    optimizer_step(optimizer, list(layer.parameters()), trainer)
    assert trainer.skipped_steps == 1 and torch.equal(layer.weight, before)
    scaler.scale(layer(torch.tensor([[1.0, 1.0]])).sum()).backward()
    optimizer_step(optimizer, list(layer.parameters()), trainer)
    assert trainer.skipped_steps == 1 and not torch.equal(layer.weight, before)
