"""Checkpoints: atomic saves, safe loads, CheckpointSaver's last/best/per-epoch files and pruning."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tunecv import __version__
from tunecv.errors import UserError
from tunecv.train.checkpoint import (
    CheckpointSaver,
    file_stem,
    load_checkpoint,
    own_storage,
    save_checkpoint,
    save_safetensors,
)


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
    with pytest.raises(UserError, match=r"plain.pth is not a tunecv checkpoint \(a plain state_dict, without the "
                       r"config and classes finetune.py saves\); give a <model>_best.pth written by finetune.py"):
        load_checkpoint(plain)
    torch.save({"model": nn.Linear(2, 2).state_dict(), "epoch": 3}, plain)
    with pytest.raises(UserError, match=r"not a tunecv checkpoint \(no config, classes\)"):
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


# --- save_format safetensors ----------------------------------------------------------------------------------------

class _Tied(nn.Module):
    """Tied weights and a buffer that is a view of a parameter: what safetensors refuses unless copied."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(3, 3)
        self.decoder = nn.Linear(3, 3)
        self.decoder.weight = self.encoder.weight
        self.register_buffer("row", self.encoder.weight.data[1])
        self.bn = nn.BatchNorm1d(3)


def _st_saver(tmp_path, **kwargs) -> CheckpointSaver:
    return _saver(tmp_path, save_format="safetensors", meta={"data_fingerprint": "0123456789abcdef"}, **kwargs)


def test_safetensors_best_round_trip(tmp_path):
    saver = _st_saver(tmp_path)
    model = _Tied()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    saver.save(model, epoch=3, metrics={"top1": 75.0, "lr": 0.1}, is_best=True, best_top1=75.0,
               training_state={"optimizer": optimizer.state_dict()})
    assert saver.best_path.name == "net_best.safetensors" and saver.last_path.name == "net_last.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net_best.json", "net_best.safetensors", "net_last.pth"]
    best = load_checkpoint(saver.best_path)
    own = model.state_dict()
    assert sorted(best["model"]) == sorted(own)
    assert all(torch.equal(best["model"][k], v) for k, v in own.items())
    assert {k: v for k, v in best.items() if k != "model"} == {
        "config": {"lr": 0.1, "model": "net"}, "classes": ["a", "b"], "epoch": 3, "metrics": {"top1": 75.0, "lr": 0.1},
        "best_metric": 75.0, "tunecv_version": __version__, "data_fingerprint": "0123456789abcdef"}
    sidecar = json.loads((tmp_path / "net_best.json").read_text())
    assert sidecar["classes"] == ["a", "b"] and "model" not in sidecar and "optimizer" not in sidecar
    # _last stays a .pth with the optimizer state (resuming), and carries the meta too
    last = torch.load(saver.last_path, weights_only=True)
    assert "optimizer" in last and last["data_fingerprint"] == "0123456789abcdef"
    # the weights are a plain safetensors file other tools read
    assert set(load_file(saver.best_path)) == set(own)


def test_safetensors_loads_into_the_model(tmp_path):
    saver = _st_saver(tmp_path)
    model = _Tied()
    saver.save(model, epoch=1, metrics={}, is_best=True)
    fresh = _Tied()
    fresh.load_state_dict(load_checkpoint(saver.best_path)["model"])
    assert torch.equal(fresh.decoder.weight, model.encoder.weight)


def test_safetensors_ema_best_and_per_epoch_pruning(tmp_path):
    saver = _st_saver(tmp_path, keep_max=1)
    for epoch in (1, 2):
        saver.save(nn.Linear(2, 2), epoch=epoch, metrics={"top1": 1.0}, is_best=False)
    path = saver.save_ema_best(nn.Linear(2, 2), epoch=2, metrics={"top1": 1.0}, best_top1=1.0)
    assert path == saver.ema_best_path == tmp_path / "net_ema_best.safetensors"
    assert load_checkpoint(path)["weights"] == "ema"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "net-2.json", "net-2.safetensors", "net_ema_best.json", "net_ema_best.safetensors", "net_last.pth"]


def test_pth_checkpoints_carry_meta(tmp_path):
    saver = _saver(tmp_path, meta={"data_fingerprint": "abc", "model": "not the weights"})
    saver.save(nn.Linear(2, 2), epoch=1, metrics={}, is_best=True)
    best = load_checkpoint(saver.best_path)
    assert best["data_fingerprint"] == "abc" and isinstance(best["model"], dict)  # meta never replaces a key


def test_unknown_save_format(tmp_path):
    with pytest.raises(UserError, match=r"save_format 'npz'; choose from \['pth', 'safetensors'\]"):
        _saver(tmp_path, save_format="npz")


def test_safetensors_without_sidecar_names_it(tmp_path):
    saver = _st_saver(tmp_path)
    saver.save(nn.Linear(2, 2), epoch=1, metrics={}, is_best=True)
    (tmp_path / "net_best.json").unlink()
    with pytest.raises(UserError, match=r"has no sidecar .*net_best\.json") as caught:
        load_checkpoint(saver.best_path)
    assert "\n" not in str(caught.value)


def test_safetensors_with_broken_or_foreign_sidecar(tmp_path):
    saver = _st_saver(tmp_path)
    saver.save(nn.Linear(2, 2), epoch=1, metrics={}, is_best=True)
    sidecar = tmp_path / "net_best.json"
    first = sidecar.read_text()
    saver.save(nn.Linear(2, 2), epoch=2, metrics={}, is_best=True)
    sidecar.write_text(first)  # as if a crash came between writing the weights and the sidecar
    with pytest.raises(UserError, match="other weights"):
        load_checkpoint(saver.best_path)
    sidecar.write_text("{not json")
    with pytest.raises(UserError, match="net_best.json is not readable JSON"):
        load_checkpoint(saver.best_path)
    sidecar.write_text("[1, 2]")
    with pytest.raises(UserError, match="not a JSON object"):
        load_checkpoint(saver.best_path)
    sidecar.write_text("{}")
    with pytest.raises(UserError, match=r"not a tunecv checkpoint \(no config, classes\)"):
        load_checkpoint(saver.best_path)


def test_damaged_safetensors_is_a_user_error(tmp_path):
    saver = _st_saver(tmp_path)
    saver.save(nn.Linear(2, 2), epoch=1, metrics={}, is_best=True)
    saver.best_path.write_bytes(b"not safetensors")
    with pytest.raises(UserError, match=r"net_best.safetensors is not a readable checkpoint \(a text file, not a "
                       r"safetensors file\)"):
        load_checkpoint(saver.best_path)


def test_own_storage_copies_only_shared_tensors():
    base = torch.arange(6.0)
    state = {"a": base, "b": base, "c": base[2:4], "t": torch.ones(2, 3).t(), "d": torch.zeros(2)}
    out = own_storage(state)
    # first users keep their memory: no extra copy
    assert out["a"].data_ptr() == base.data_ptr() and out["d"].data_ptr() == state["d"].data_ptr()
    assert out["b"].data_ptr() != base.data_ptr() and torch.equal(out["b"], base)
    assert torch.equal(out["c"], base[2:4]) and out["t"].is_contiguous()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_saved_files_get_the_users_usual_permissions(tmp_path, suffix):
    # mkstemp makes 0600 and safetensors recreates its file as 0600: a checkpoint others should read must not be
    old = os.umask(0o022)
    try:
        path = tmp_path / f"m_best{suffix}"
        payload = {"model": {"w": torch.ones(1)}, "config": {}, "classes": ["a"]}
        (save_checkpoint if suffix == ".pth" else save_safetensors)(payload, path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
