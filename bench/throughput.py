"""Train and eval images/s of one model/size/batch, on synthetic tensors, the real JPEG pipeline and the image
cache, for tunecv and for the naive baseline (bench/naive.py: the PyTorch tutorial's loop); prints a table.

    python -m bench.throughput --data_dir ../shared/data/hymenoptera_data --model tf_efficientnet_lite0 \\
        --image_size 224 --batch_size 16
    # a CUDA GPU: resnet50, AMP and channels_last against fp32 (+ torch.compile), 20 copies of every photo
    python -m bench.throughput --device cuda --model resnet50 --batch_size 128 --workers 8 15 --repeat 20 \\
        --batches 60 --naive_workers 8 --compile

Every model trains all its layers (full fine-tuning), from the same random init, with the same threads. Each
figure is measured after `--warmup` batches (loader start-up, allocator, cuDNN, compile), plus the batches the
loader's workers may have queued meanwhile, and, on CUDA, up to the GPU's last step. *loader img/s*: what the
input pipeline alone delivers (tunecv's on CUDA includes its copy to the GPU and normalisation there; the
tutorial's does not). `--repeat K` lists every photo K times (symbolic links), so that a fast GPU's figures are
not made of epoch ends.
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import json
import logging
import shutil
import tempfile
import time
import types
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from bench import HYMENOPTERA, naive

QUEUED_PER_WORKER = 2  # DataLoader's prefetch_factor: batches each worker may hold ready when a figure starts


def rate(batches: Iterable, step: Callable[[tuple], int], warmup: int, measured: int) -> float:
    """Images/s over `measured` batches after `warmup`; CUDA work queued by the steps is waited for."""
    iterator = iter(batches)
    for batch in itertools.islice(iterator, warmup):
        step(batch)
    _sync()
    images, start = 0, time.perf_counter()
    for batch in itertools.islice(iterator, measured):
        images += step(batch)
    _sync()
    return images / (time.perf_counter() - start)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def endless(loader: Iterable) -> Iterable:
    """The loader's batches, epoch after epoch (batches that failed to decode entirely are skipped)."""
    return (batch for batch in itertools.chain.from_iterable(itertools.repeat(loader)) if batch is not None)


def count(batch: tuple) -> int:
    return batch[0].shape[0]


def synthetic_batch(batch_size: int, size: int, num_classes: int,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and labels, made on `device`: no copy or loading in the synthetic figures."""
    return (torch.randn(batch_size, 3, size, size, device=device),
            torch.randint(0, num_classes, (batch_size,), device=device))


def repeated_folder(data_dir: str, times: int) -> str:
    """An ImageFolder tree listing every image of `data_dir` `times` times (symbolic links)."""
    if times <= 1:
        return data_dir
    root = Path(tempfile.mkdtemp(prefix="tunecv-throughput-data-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    for image in Path(data_dir).resolve().glob("*/*/*"):
        split, label = image.parent.parent.name, image.parent.name
        (root / split / label).mkdir(parents=True, exist_ok=True)
        for copy in range(times):
            (root / split / label / f"{image.stem}-{copy}{image.suffix}").symlink_to(image)
    return str(root)


def tunecv_setup(args, cache: str, workers: int, channels_last: bool = True, amp_level: str = "O0",
                 compile: bool = False):
    from tunecv.config import load_config
    from tunecv.scripts import finetune

    out = tempfile.mkdtemp(prefix="tunecv-throughput-")
    cfg = load_config(None, {"dataset": "folder", "data_dir": args.data_dir, "model": args.model,
                             "image_resize": args.image_size, "batch_size": args.batch_size,
                             "num_parallel_workers": workers, "cache_images": cache, "cache_features": "false",
                             "device": args.device, "ckpt_save_dir": out, "epoch_size": 1,
                             "channels_last": channels_last, "amp_level": amp_level, "compile": compile,
                             "drop_remainder": True})  # one batch shape: no recompile or new cuDNN plan mid-figure
    task, run, pipeline, plan = finetune.prepare(cfg)
    plan.enter(1)
    return types.SimpleNamespace(**vars(pipeline), plan=plan, compute=pipeline.trainer.compute)


def tunecv_rates(args, setting: dict, cache: str = "none", workers: int = 0, synthetic: bool = True) -> dict:
    """{train_img_s, eval_img_s} of tunecv, and loader_img_s for a real pipeline."""
    from tunecv.models.factory import set_train_mode
    from tunecv.train.engine import backward, batch_loss, evaluate, optimizer_step

    setup = tunecv_setup(args, cache, workers, **setting)
    model, trainer, optimizer = setup.forward_model, setup.trainer, setup.plan.optimizer
    params = [p for group in optimizer.param_groups for p in group["params"]]
    device, classes = setup.compute.device, len(setup.train_set.classes)

    def train_step(batch: tuple) -> int:
        loss, images = batch_loss(model, batch, trainer)
        backward(loss, trainer)
        optimizer_step(optimizer, params, trainer)
        return images

    workers = setup.train_loader.num_workers
    warmup = args.warmup + QUEUED_PER_WORKER * workers
    figures = {"workers": workers}
    if not synthetic:
        figures["loader_img_s"] = rate(endless(setup.train_loader), count, warmup, args.batches)
    set_train_mode(model, keep_frozen_eval=trainer.freeze_bn)
    batches = itertools.repeat(synthetic_batch(args.batch_size, args.image_size, classes, device)) if synthetic \
        else endless(setup.train_loader)
    figures["train_img_s"] = rate(batches, train_step, warmup, args.batches)
    if synthetic:
        inputs = setup.compute.inputs(synthetic_batch(args.batch_size, args.image_size, classes, device)[0])

        @torch.inference_mode()
        def eval_step(_: tuple) -> int:
            with setup.compute.autocast():
                model(inputs)
            return inputs.shape[0]

        model.eval()
        figures["eval_img_s"] = rate(itertools.repeat(None), eval_step, args.warmup, args.batches)
    else:
        evaluate(model, setup.val_loader, setup.compute, classes)  # warm-up pass: workers, caches, allocator
        result = evaluate(model, setup.val_loader, setup.compute, classes)
        figures["eval_img_s"] = result.images / result.seconds
    return figures


def naive_rates(args, synthetic: bool) -> dict:
    train_loader = naive.tutorial_loader(args.data_dir, "train", args.image_size, args.batch_size, args.naive_workers)
    val_loader = naive.tutorial_loader(args.data_dir, "val", args.image_size, args.batch_size, args.naive_workers)
    classes = len(train_loader.dataset.classes)
    torch.manual_seed(0)
    model = naive.tutorial_model(args.model, classes, pretrained=False).to(naive.DEVICE)
    criterion, optimizer = nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)

    def train_step(batch: tuple) -> int:
        naive.train_step(model, optimizer, criterion, batch[0], batch[1])
        return batch[0].shape[0]

    @torch.no_grad()
    def eval_step(batch: tuple) -> int:
        model(batch[0].to(naive.DEVICE))
        return batch[0].shape[0]

    def batches(loader):
        return itertools.repeat(synthetic_batch(args.batch_size, args.image_size, classes, naive.DEVICE)) \
            if synthetic else endless(loader)

    warmup = args.warmup + (0 if synthetic else QUEUED_PER_WORKER * args.naive_workers)
    figures = {} if synthetic else {"loader_img_s": rate(endless(train_loader), count, warmup, args.batches)}
    model.train()
    figures["train_img_s"] = rate(batches(train_loader), train_step, warmup, args.batches)
    model.eval()
    figures["eval_img_s"] = rate(batches(val_loader), eval_step, warmup, args.batches)
    return figures


def settings(args, cuda: bool) -> list[tuple[str, dict]]:
    """The hardware settings measured on synthetic tensors. The real pipelines use the last one without compile
    (compile's warm-up would be paid again for each): channels_last, with AMP on CUDA (tunecv's amp_level only
    acts there)."""
    rows = [("fp32, channels_last false", {"channels_last": False, "amp_level": "O0"}),
            ("fp32, channels_last", {"channels_last": True, "amp_level": "O0"})]
    if cuda:
        rows += [("AMP, channels_last false", {"channels_last": False, "amp_level": args.amp_level}),
                 ("AMP, channels_last", {"channels_last": True, "amp_level": args.amp_level})]
    if args.compile:
        rows.append((rows[-1][0] + ", compile", {**rows[-1][1], "compile": True}))
    return rows


def measure(args) -> list[dict]:
    cuda = torch.device(args.device if args.device != "auto" else naive.DEVICE).type == "cuda"
    rows = []

    def record(row: dict) -> None:
        rows.append({key: round(value, 1) if isinstance(value, float) else value for key, value in row.items()})
        print(json.dumps(rows[-1]), flush=True)

    measured = settings(args, cuda)
    for name, setting in measured:
        record({"tool": "tunecv", "setting": name, "pipeline": "synthetic tensors",
                **tunecv_rates(args, setting)})
    chosen_name, chosen = next((name, setting) for name, setting in reversed(measured) if not setting.get("compile"))
    record({"tool": "naive (PyTorch tutorial)", "setting": "fp32", "pipeline": "synthetic tensors", "workers": 0,
            **naive_rates(args, synthetic=True)})
    for pipeline, cache in (("real JPEG", "none"), ("image cache (RAM)", "ram")):
        for workers in args.workers:  # the figures carry the workers the loader started (capped at the cores)
            record({"tool": "tunecv", "setting": chosen_name, "pipeline": pipeline,
                    **tunecv_rates(args, chosen, cache, workers, synthetic=False)})
    record({"tool": "naive (PyTorch tutorial)", "setting": "fp32", "pipeline": "real JPEG",
            "workers": args.naive_workers, **naive_rates(args, synthetic=False)})
    return rows


def eval_batch_sweep(args, multiples: tuple[int, ...] = (1, 2, 4)) -> list[dict]:
    """Synthetic eval img/s at larger batches (inference_mode, channels_last): does a bigger eval batch pay?"""
    setup = tunecv_setup(args, "none", 0)
    model, rows = setup.forward_model.eval(), []
    for multiple in multiples:
        inputs = setup.compute.inputs(synthetic_batch(args.batch_size * multiple, args.image_size, 2,
                                                      setup.compute.device)[0])

        @torch.inference_mode()
        def eval_step(_: tuple, inputs=inputs) -> int:
            model(inputs)
            return inputs.shape[0]

        rows.append({"eval_batch": args.batch_size * multiple,
                     "eval_img_s": round(rate(itertools.repeat(None), eval_step, 2, max(3, args.batches // multiple)),
                                         1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=HYMENOPTERA)
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=10, help="measured batches per figure")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="tunecv loader workers to try")
    parser.add_argument("--naive_workers", type=int, default=4, help="the tutorial's num_workers")
    parser.add_argument("--repeat", type=int, default=1, help="list every photo this many times")
    parser.add_argument("--amp_level", default="O2", help="the AMP setting measured on CUDA")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to warm up)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    args.data_dir = repeated_folder(args.data_dir, args.repeat)
    return args


def table(rows: list[dict], sweep: list[dict]) -> str:
    synthetic = {(r["tool"], r["setting"]): r["train_img_s"] for r in rows if r["pipeline"] == "synthetic tensors"}
    naive_rows = {r["pipeline"]: r for r in rows if r["tool"].startswith("naive")}
    lines = ["| tool | setting | pipeline | loader workers | loader img/s | train img/s | % of its synthetic | "
             "eval img/s | train x naive | eval x naive |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = naive_rows.get(r["pipeline"]) or naive_rows["real JPEG"]
        own = synthetic[r["tool"], r["setting"]]
        lines.append(f"| {r['tool']} | {r['setting']} | {r['pipeline']} | {r['workers']} | "
                     f"{r.get('loader_img_s', '-')} | {r['train_img_s']} | {100 * r['train_img_s'] / own:.0f} % | "
                     f"{r['eval_img_s']} | {r['train_img_s'] / base['train_img_s']:.2f} | "
                     f"{r['eval_img_s'] / base['eval_img_s']:.2f} |")
    lines += ["", "| eval batch (synthetic, inference_mode, channels_last) | eval img/s |", "|---|---|"]
    lines += [f"| {r['eval_batch']} | {r['eval_img_s']} |" for r in sweep]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    logging.basicConfig(level=logging.WARNING)
    args = parse(argv)
    rows = measure(args)
    text = table(rows, eval_batch_sweep(args))
    print(text)
    return text


if __name__ == "__main__":
    main()
