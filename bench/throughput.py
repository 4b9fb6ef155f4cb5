"""Train and eval images/s of one model/size/batch, on synthetic tensors, the real JPEG pipeline and the image
cache, for tunecv and for the naive baseline (bench/naive.py: the PyTorch tutorial's loop); prints a table.

    python -m bench.throughput --data_dir ../shared/data/hymenoptera_data --model tf_efficientnet_lite0 \\
        --image_size 224 --batch_size 16

Every model trains all its layers (full fine-tuning), from the same random init, with the same threads.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn

from bench import HYMENOPTERA, naive


def rate(batches: Iterable, step: Callable[[tuple], int], warmup: int, measured: int) -> float:
    """Images/s over `measured` batches after `warmup` (loader start-up, allocator, first-call costs)."""
    iterator = iter(batches)
    for batch in itertools.islice(iterator, warmup):
        step(batch)
    images, start = 0, time.perf_counter()
    for batch in itertools.islice(iterator, measured):
        images += step(batch)
    return images / (time.perf_counter() - start)


def repeat(batch: tuple) -> Iterable[tuple]:
    return itertools.repeat(batch)


def synthetic_batch(batch_size: int, size: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch_size, 3, size, size), torch.randint(0, num_classes, (batch_size,))


def tunecv_setup(args, cache: str, workers: int, channels_last: bool = True):
    from tunecv.config import load_config
    from tunecv.scripts import finetune

    out = tempfile.mkdtemp(prefix="tunecv-throughput-")
    cfg = load_config(None, {"dataset": "folder", "data_dir": args.data_dir, "model": args.model,
                             "image_resize": args.image_size, "batch_size": args.batch_size,
                             "num_parallel_workers": workers, "cache_images": cache, "cache_features": "false",
                             "device": args.device, "ckpt_save_dir": out, "epoch_size": 1,
                             "channels_last": channels_last})
    setup = finetune.prepare(cfg)
    setup.plan.enter(1)
    return setup


def tunecv_rates(args, cache: str, workers: int, synthetic: bool, channels_last: bool = True) -> tuple[float, float]:
    from tunecv.engine import backward, batch_loss, evaluate, optimizer_step
    from tunecv.models import set_train_mode

    setup = tunecv_setup(args, cache, workers, channels_last)
    model, trainer, optimizer = setup.forward_model, setup.trainer, setup.plan.optimizer
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def train_step(batch: tuple) -> int:
        loss, count = batch_loss(model, batch, trainer)
        backward(loss, trainer)
        optimizer_step(optimizer, params, trainer)
        return count

    set_train_mode(model, keep_frozen_eval=trainer.freeze_bn)
    classes = len(setup.train_set.classes)
    loader = repeat(synthetic_batch(args.batch_size, args.image_size, classes)) if synthetic else \
        itertools.chain.from_iterable(itertools.repeat(setup.train_loader))
    train = rate(loader, train_step, args.warmup, args.batches)
    if synthetic:
        inputs = setup.compute.inputs(synthetic_batch(args.batch_size, args.image_size, classes)[0])

        @torch.inference_mode()
        def eval_step(_: tuple) -> int:
            model(inputs)
            return inputs.shape[0]

        model.eval()
        evaluation = rate(itertools.repeat(None), eval_step, args.warmup, args.batches)
    else:
        evaluate(model, setup.val_loader, setup.compute, classes)  # warm-up pass: workers, caches, allocator
        result = evaluate(model, setup.val_loader, setup.compute, classes)
        evaluation = result.images / result.seconds
    return train, evaluation


def naive_rates(args, synthetic: bool) -> tuple[float, float]:
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
        return repeat(synthetic_batch(args.batch_size, args.image_size, classes)) if synthetic else \
            itertools.chain.from_iterable(itertools.repeat(loader))

    model.train()
    train = rate(batches(train_loader), train_step, args.warmup, args.batches)
    model.eval()
    evaluation = rate(batches(val_loader), eval_step, args.warmup, args.batches)
    return train, evaluation


def eval_batch_sweep(args, multiples: tuple[int, ...] = (1, 2, 4)) -> list[dict]:
    """Synthetic eval img/s at larger batches (inference_mode, channels_last): does a bigger eval batch pay?"""
    setup = tunecv_setup(args, "none", 0)
    model, rows = setup.forward_model.eval(), []
    for multiple in multiples:
        inputs = setup.compute.inputs(synthetic_batch(args.batch_size * multiple, args.image_size, 2)[0])

        @torch.inference_mode()
        def eval_step(_: tuple, inputs=inputs) -> int:
            model(inputs)
            return inputs.shape[0]

        rows.append({"eval_batch": args.batch_size * multiple,
                     "eval_img_s": round(rate(itertools.repeat(None), eval_step, 2, max(3, args.batches // multiple)),
                                         1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def measure(args) -> list[dict]:
    train, evaluation = tunecv_rates(args, "none", 0, True, channels_last=False)
    rows = [{"tool": "tunecv, channels_last false", "pipeline": "synthetic tensors", "workers": 0,
             "train_img_s": round(train, 1), "eval_img_s": round(evaluation, 1)}]
    print(json.dumps(rows[-1]), flush=True)
    for pipeline, cache, synthetic in (("synthetic tensors", "none", True), ("real JPEG", "none", False),
                                       ("image cache (RAM)", "ram", False)):
        for workers in args.workers:
            if synthetic and workers != args.workers[0]:
                continue
            train, evaluation = tunecv_rates(args, cache, workers, synthetic)
            rows.append({"tool": "tunecv", "pipeline": pipeline, "workers": 0 if synthetic else workers,
                         "train_img_s": round(train, 1), "eval_img_s": round(evaluation, 1)})
            print(json.dumps(rows[-1]), flush=True)
        if cache == "none":
            train, evaluation = naive_rates(args, synthetic)
            rows.append({"tool": "naive (PyTorch tutorial)", "pipeline": pipeline,
                         "workers": 0 if synthetic else args.naive_workers,
                         "train_img_s": round(train, 1), "eval_img_s": round(evaluation, 1)})
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
    parser.add_argument("--device", default="auto")
    return parser.parse_args(argv)


def table(rows: list[dict], sweep: list[dict]) -> str:
    synthetic = {r["tool"]: r["train_img_s"] for r in rows if r["pipeline"] == "synthetic tensors"}
    naive_rows = {r["pipeline"]: r for r in rows if r["tool"].startswith("naive")}
    lines = ["| tool | pipeline | loader workers | train img/s | % of its synthetic | eval img/s | "
             "train x naive | eval x naive |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = naive_rows.get(r["pipeline"]) or naive_rows["real JPEG"]
        lines.append(f"| {r['tool']} | {r['pipeline']} | {r['workers']} | {r['train_img_s']} | "
                     f"{100 * r['train_img_s'] / synthetic[r['tool']]:.0f} % | {r['eval_img_s']} | "
                     f"{r['train_img_s'] / base['train_img_s']:.2f} | {r['eval_img_s'] / base['eval_img_s']:.2f} |")
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
