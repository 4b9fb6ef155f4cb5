"""Start-up scan and JPEG decode throughput on a folder of photos; prints one JSON line.

    python -m bench.decode --data_dir ../shared/data/hymenoptera_data
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from bench import HYMENOPTERA
from tunecv.config import load_config
from tunecv.data import create_dataset, draft_size
from tunecv.data.scan import forget_scans, scan_images, write_scan_cache
from tunecv.data.transforms import create_transforms
from tunecv.tasks.classification import Classification


def images_per_s(count: int, seconds: float) -> float:
    return round(count / max(seconds, 1e-9), 1)


def decode_rate(dataset, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        for index in range(len(dataset)):
            dataset.load_image(index)
    return images_per_s(len(dataset) * repeats, time.perf_counter() - start)


def pipeline_rate(dataset) -> float:
    start = time.perf_counter()
    for index in range(len(dataset)):
        dataset[index]
    return images_per_s(len(dataset), time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data_dir", default=HYMENOPTERA)
    parser.add_argument("--image_resize", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    task = Classification()
    loaded = load_config(None, {"data_dir": args.data_dir, "image_resize": args.image_resize, "scale": "0.35,1.0"})
    cfg, _ = task.resolve_data(task.resolve_config(loaded))  # the layout create_dataset needs
    plain = create_dataset(cfg.data, "train", None)
    paths = [path for path, _ in plain.samples]
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "scan_cache.json"
        forget_scans()  # the dataset above was scanned in this process
        cold = scan_images(paths, cache)
        write_scan_cache([cold.cache])
        warm = scan_images(paths, cache)
    train_draft = draft_size(cfg.data, is_training=True)
    drafted = create_dataset(cfg.data, "train", None, draft_size=train_draft)
    transform = create_transforms(cfg.data, is_training=True)
    print(json.dumps({
        "images": len(paths), "machine": platform.processor() or platform.machine(),
        "scan_cold_images_per_s": images_per_s(len(paths), cold.seconds),
        "scan_cached_images_per_s": images_per_s(len(paths), warm.seconds),
        "decode_full_images_per_s": decode_rate(plain, args.repeats),
        "decode_draft_images_per_s": decode_rate(drafted, args.repeats), "draft_size": train_draft,
        "train_pipeline_full_images_per_s": pipeline_rate(create_dataset(cfg.data, "train", transform)),
        "train_pipeline_draft_images_per_s": pipeline_rate(
            create_dataset(cfg.data, "train", transform, draft_size=train_draft)),
    }))


if __name__ == "__main__":
    main()
