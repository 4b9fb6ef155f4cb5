"""Several processes with torchrun (gloo on the CPU): the run on 2 processes x batch 4 trains as one process on
batch 8 does, writes its files once, and validate.py agrees with its checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_image_folder

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# LayerNorm, no dropout: a per-process batch of 4 computes what a batch of 8 does, up to float summation order
MODEL = "test_convnext"
ARGS = ("--pretrained", "false", "--image_resize", "32", "--epoch_size", "2", "--device", "cpu", "--seed", "7",
        "--num_parallel_workers", "0", "--drop_rate", "0", "--drop_path_rate", "0")
RECIPES = {"full fine-tune": ("--model", MODEL, "--lr", "0.002"),
           # BatchNorm frozen, the classifier on the backbone's stored outputs, each process its share of them
           "linear probe on cached features": ("--model", "test_efficientnet", "--freeze", "all", "--no_aug",
                                               "--hflip", "0.5", "--lr", "0.05")}
# the losses of the two runs agree to this (float sums in another order; measured: equal to 4 decimals)
LOSS_TOLERANCE = 2e-3


def _run(*command: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(command), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _rows(results: Path) -> list[list[str]]:
    return [line.split() for line in results.read_text().splitlines()[1:-1]]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("ddp") / "images")


@pytest.mark.parametrize("recipe", RECIPES)
def test_two_gloo_processes_train_as_one_on_the_global_batch(data_dir, tmp_path, recipe):
    single, ddp, args = tmp_path / "single", tmp_path / "ddp", (*ARGS, *RECIPES[recipe])
    _run(sys.executable, "finetune.py", "--data_dir", str(data_dir), *args, "--batch_size", "8",
         "--ckpt_save_dir", str(single))
    proc = _run(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "finetune.py", "--data_dir", str(data_dir), *args, "--batch_size", "4", "--distribute",
                "--ckpt_save_dir", str(ddp))
    assert "2 processes x batch 4 = global batch 8" in proc.stderr
    assert ("feature cache: the classifier trains" in proc.stderr) == (recipe != "full fine-tune")
    assert proc.stdout.count("best checkpoint:") == 1  # one process reports
    one, two = _rows(single / "results.txt"), _rows(ddp / "results.txt")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        assert a[4] == b[4]  # top-1 over every validation image, each counted once
        assert abs(float(a[2]) - float(b[2])) < LOSS_TOLERANCE and abs(float(a[3]) - float(b[3])) < LOSS_TOLERANCE
    assert json.loads((ddp / "run.json").read_text())["world_size"] == 2
    best = (ddp / "results.txt").read_text().splitlines()[-1].split()[2]
    (best_path,) = ddp.glob("*_best.pth")
    check = _run(sys.executable, "validate.py", "--ckpt_path", str(best_path),
                 "--data_dir", str(data_dir), "--num_parallel_workers", "0", "--device", "cpu")
    assert f"top1 {best}" in check.stdout


def test_distribute_without_torchrun_trains_alone_and_says_how_to_launch(data_dir, tmp_path):
    """MindCV's configs all set distribute: true; on one device they run as they are."""
    proc = subprocess.run([sys.executable, "finetune.py", "--data_dir", str(data_dir), *ARGS, "--model", MODEL,
                           "--epoch_size", "1", "--distribute", "--ckpt_save_dir", str(tmp_path / "ckpt")], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "distribute: true, but this process was not launched by torchrun, so it trains alone; for several GPUs " \
           "run torchrun --nproc_per_node" in proc.stderr
    assert (tmp_path / "ckpt" / "results.txt").exists()


EVALUATE_SHARDS = '''
import json, sys
import torch
from torch import nn
from tunecv.utils import distributed
from tunecv.train.engine import evaluate
from tunecv.utils.runtime import Compute

distributed.init(False, "cpu")
rank, world = distributed.rank(), distributed.world_size()
images = torch.arange(11.0)[:, None]
labels = torch.arange(11) % 3
mine = list(range(rank, 11, world))  # each process its share, interleaved
batches = [(images[mine[i:i + 2]], labels[mine[i:i + 2]], torch.tensor(mine[i:i + 2])) for i in range(0, len(mine), 2)]
model = nn.Linear(1, 3)
with torch.no_grad():
    model.weight.copy_(torch.tensor([[1.0], [-1.0], [0.5]]))
    model.bias.copy_(torch.tensor([0.0, 9.0, 1.0]))
result = evaluate(model, batches, Compute(torch.device("cpu")), 3, keep_logits=True, temperature=2.0)
if distributed.is_main():
    json.dump({"indices": result.indices, "logits": result.logits.tolist(), "targets": result.targets,
               "images": result.images, "scores": result.scores}, open(sys.argv[1], "w"))
distributed.shutdown()
'''


def _run_on_two_processes(code: str, tmp_path: Path):
    """`code` under torchrun on 2 gloo processes; what the first wrote as json to sys.argv[1]."""
    script, out = tmp_path / "script.py", tmp_path / "out.json"
    script.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n" + code)
    _run(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(out))
    return json.loads(out.read_text())


def test_evaluate_merges_every_process_share_with_its_logits_in_dataset_order(tmp_path):
    import torch

    merged = _run_on_two_processes(EVALUATE_SHARDS, tmp_path)
    expected = torch.arange(11.0)[:, None] * torch.tensor([1.0, -1.0, 0.5]) + torch.tensor([0.0, 9.0, 1.0])
    assert merged["indices"] == list(range(11)) and merged["images"] == 11
    assert merged["targets"] == [i % 3 for i in range(11)]
    assert torch.allclose(torch.tensor(merged["logits"]), expected)  # before the temperature, row i is image i
    assert merged["scores"] == pytest.approx((expected / 2).softmax(dim=1).max(dim=1).values.tolist(), abs=1e-6)


SYNC_BUFFERS = '''
import json, sys
import torch
from torch import nn
from tunecv.utils import distributed

distributed.init(False, "cpu")
norm = nn.BatchNorm1d(2)
norm.running_mean.fill_(float(distributed.rank() + 1))  # each process its own statistics, as after DDP steps
distributed.sync_buffers(norm)
values = distributed.gather(norm.running_mean.tolist())
if distributed.is_main():
    json.dump(values, open(sys.argv[1], "w"))
distributed.shutdown()
'''


def test_validation_uses_the_first_process_batchnorm_statistics_everywhere(tmp_path):
    # DDP sends the buffers at each training forward only: after the last step every process has its own, and
    # each would validate its share of the images with another model than the one saved
    assert _run_on_two_processes(SYNC_BUFFERS, tmp_path) == [[1.0, 1.0], [1.0, 1.0]]
