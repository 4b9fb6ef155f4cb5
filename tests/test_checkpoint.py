"""Checkpoints: atomic saves, safe loads, CheckpointSaver's last/best/per-epoch files and pruning."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from tunecv import __version__
from tunecv.checkpoint import CheckpointSaver, file_stem, load_checkpoint, save_checkpoint
from tunecv.errors import UserError


def _payload(value: float) -> dict:
    return {"model": {"w": torch.full((2,), value)}, "config": {"lr": 0.1}, "classes": ["a", "b"]}


def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "sub" / "m.pth"
    save_checkpoint(_payload(1.0), path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.ones(2)) and loaded["classes"] == ["a", "b"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.pth"]  # no temp file left


def test_failed_save_keeps_previous_file(tmp_path):
    path = tmp_path / "m.pth"
    save_checkpoint(_payload(1.0), path)
    before = path.read_bytes()
    broken = {**_payload(2.0), "lock": threading.Lock()}  # cannot be pickled: torch.save fails midway
    with pytest.raises(TypeError, match="pickle"):
        save_checkpoint(broken, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth"]
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth")
    plain = tmp_path / "plain.pth"
    torch.save(nn.Linear(2, 2).state_dict(), plain)
    with pytest.raises(UserError, match=r"not a tunecv checkpoint \(no model, config, classes\)"):
        load_checkpoint(plain)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x80\x02junk")
    with pytest.raises(UserError, match="junk.pth"):
        load_checkpoint(junk)


def test_file_stem():
    assert file_stem("hf-hub:timm/resnet18.a1_in1k") == "hf-hub_timm_resnet18.a1_in1k"


def _saver(tmp_path, **kwargs) -> CheckpointSaver:
    return CheckpointSaver(tmp_path, "net", {"lr": 0.1, "model": "net"}, ["a", "b"], **kwargs)


def test_saver_last_and_best(tmp_path):
    saver = _saver(tmp_path)
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict()}
    saver.save(model, epoch=1, metrics={"top1": 50.0}, is_best=True, best_top1=50.0, training_state=state)
    with torch.no_grad():
        model.weight.add_(1.0)
    saver.save(model, epoch=2, metrics={"top1": 40.0}, is_best=False, best_top1=50.0, training_state=state)
    best, last = load_checkpoint(saver.best_path), load_checkpoint(saver.last_path)
    assert saver.best_path.name == "net_best.pth" and saver.last_path.name == "net_last.pth"
    assert best["epoch"] == 1 and last["epoch"] == 2
    assert torch.equal(last["model"]["weight"], model.weight) and not torch.equal(best["model"]["weight"],
                                                                                   model.weight)
    assert "optimizer" in last and "optimizer" not in best
    assert best["classes"] == ["a", "b"] and best["config"]["model"] == "net"
    assert best["tunecv_version"] == __version__ and best["metrics"] == {"top1": 50.0}
    assert best["best_metric"] == 50.0 and last["best_metric"] == 50.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net_best.pth", "net_last.pth"]  # keep_max 0


def _epoch_files(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.glob("net-*.pth"))


def test_saver_latest_k(tmp_path):
    saver = _saver(tmp_path, keep_max=2, policy="latest_k")
    for epoch, top1 in enumerate([50.0, 90.0, 70.0, 60.0], start=1):
        saver.save(nn.Linear(2, 2), epoch=epoch, metrics={"top1": top1}, is_best=False)
    assert _epoch_files(tmp_path) == ["net-3.pth", "net-4.pth"]
    assert load_checkpoint(tmp_path / "net-4.pth")["epoch"] == 4


def test_saver_top_k(tmp_path):
    saver = _saver(tmp_path, keep_max=2, policy="top_k")
    for epoch, top1 in enumerate([50.0, 90.0, 70.0, 60.0, 95.0], start=1):
        saver.save(nn.Linear(2, 2), epoch=epoch, metrics={"top1": top1}, is_best=False)
    assert _epoch_files(tmp_path) == ["net-2.pth", "net-5.pth"]


def test_saver_interval(tmp_path):
    saver = _saver(tmp_path, keep_max=10, interval=2)
    for epoch in range(1, 6):
        saver.save(nn.Linear(2, 2), epoch=epoch, metrics={}, is_best=False)
    assert _epoch_files(tmp_path) == ["net-2.pth", "net-4.pth"]


def test_checkpoint_loads_with_weights_only(tmp_path):
    # primitives and tensors only: a plain torch.load(weights_only=True) reads it
    saver = _saver(tmp_path)
    saver.save(nn.BatchNorm1d(2), epoch=1, metrics={"top1": 1.0, "lr": 0.1}, is_best=True,
               training_state={"optimizer": torch.optim.AdamW(nn.Linear(2, 2).parameters()).state_dict()})
    data = torch.load(saver.last_path, weights_only=True)
    assert set(data) >= {"model", "config", "classes", "epoch", "metrics", "tunecv_version", "optimizer"}
