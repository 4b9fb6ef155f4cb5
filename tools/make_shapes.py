"""A COCO-format instance-segmentation dataset of coloured shapes on textured backgrounds, offline and seeded: the
detection path's test and benchmark data (no COCO images or weights are reachable here).

    python -m tools.make_shapes data/shapes_a --classes circle square triangle
    python -m tools.make_shapes data/shapes_b --classes star cross --train 120 --val 40 --size 192 --seed 1

Writes TARGET/train/*.png, TARGET/val/*.png and TARGET/annotations/instances_{train,val}.json (polygon masks, xywh
boxes, areas). Category ids are not contiguous (11, 21, 31, ...), as in COCO, so loaders must remap them.
A non-empty TARGET is replaced only with --force; the folder is built beside TARGET and renamed into place.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from tools.tool_cli import ToolParser, check_writable_folder, int_between, replace_folder, run_tool
from tunecv.errors import UserError

SHAPES = ("circle", "square", "triangle", "star", "cross", "hexagon")
CATEGORY_ID_STEP = 10  # category ids 11, 21, 31, ...: a loader that assumes contiguous ids fails visibly
MIN_SIZE = 32  # the smallest detection min_size tunecv accepts (tunecv/config/rules.py); smaller shapes vanish
MAX_SIZE = 4096  # far past any detector's max_size, and well inside PIL's decompression-bomb limit


def polygon(kind: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    """The outline of a shape centred at (cx, cy) that fits in a circle of `radius`, rotated by `angle`."""
    if kind == "circle":
        corners = [(radius, 2 * math.pi * i / 32) for i in range(32)]
    elif kind == "square":
        corners = [(radius, angle + math.pi / 4 + math.pi / 2 * i) for i in range(4)]
    elif kind == "triangle":
        corners = [(radius, angle + 2 * math.pi * i / 3) for i in range(3)]
    elif kind == "hexagon":
        corners = [(radius, angle + math.pi / 3 * i) for i in range(6)]
    elif kind == "star":
        corners = [(radius if i % 2 == 0 else radius * 0.45, angle + math.pi / 5 * i) for i in range(10)]
    elif kind == "cross":
        arm, half = radius, radius * 0.35
        outline = [(half, arm), (half, half), (arm, half), (arm, -half), (half, -half), (half, -arm), (-half, -arm),
                   (-half, -half), (-arm, -half), (-arm, half), (-half, half), (-half, arm)]
        corners = [(math.hypot(x, y), angle + math.atan2(y, x)) for x, y in outline]
    else:
        raise ValueError(f"unknown shape {kind!r}; choose from {SHAPES}")
    return [(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in corners]


def background(size: int, rng: random.Random) -> Image.Image:
    """Stripes, blotches and noise in muted colours: texture the detector must learn to ignore."""
    base = tuple(rng.randint(60, 200) for _ in range(3))
    image = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 8)):
        tint = tuple(min(255, max(0, c + rng.randint(-50, 50))) for c in base)
        x, y = rng.uniform(-size / 2, size), rng.uniform(-size / 2, size)
        if rng.random() < 0.5:
            draw.rectangle([x, 0, x + rng.uniform(4, size / 5), size], fill=tint)
        else:
            r = rng.uniform(size / 10, size / 3)
            draw.ellipse([x, y, x + r, y + r], fill=tint)
    noise = Image.effect_noise((size, size), rng.uniform(10, 30)).convert("RGB")
    return Image.blend(image.filter(ImageFilter.GaussianBlur(1.5)), noise, 0.15)


def draw_image(size: int, classes: list[str], max_shapes: int, rng: random.Random
               ) -> tuple[Image.Image, list[tuple[int, list[tuple[float, float]]]]]:
    """An image and its shapes (class index, outline); shapes do not overlap, so every outline is its mask."""
    image = background(size, rng)
    draw = ImageDraw.Draw(image)
    placed: list[tuple[float, float, float]] = []
    shapes = []
    for _ in range(rng.randint(1, max_shapes)):
        for _attempt in range(30):
            radius = rng.uniform(size * 0.09, size * 0.22)
            cx, cy = rng.uniform(radius, size - radius), rng.uniform(radius, size - radius)
            if all(math.hypot(cx - x, cy - y) > radius + r + 2 for x, y, r in placed):
                break
        else:
            continue
        label = rng.randrange(len(classes))
        outline = polygon(classes[label], cx, cy, radius, rng.uniform(0, 2 * math.pi))
        colour = tuple(rng.choice((rng.randint(0, 60), rng.randint(195, 255))) for _ in range(3))
        draw.polygon(outline, fill=colour, outline=tuple(c // 2 for c in colour))
        placed.append((cx, cy, radius))
        shapes.append((label, outline))
    return image, shapes


def coco_annotation(ann_id: int, image_id: int, category_id: int, outline: list[tuple[float, float]]) -> dict:
    xs, ys = [x for x, _ in outline], [y for _, y in outline]
    area = 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(outline, outline[1:] + outline[:1])))
    return {"id": ann_id, "image_id": image_id, "category_id": category_id,
            "segmentation": [[round(v, 2) for point in outline for v in point]], "area": round(area, 2),
            "bbox": [round(min(xs), 2), round(min(ys), 2), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)],
            "iscrowd": 0}


def write_split(target: Path, split: str, count: int, size: int, classes: list[str], max_shapes: int,
                rng: random.Random) -> Path:
    """TARGET/<split>/*.png and TARGET/annotations/instances_<split>.json."""
    (target / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        image, shapes = draw_image(size, classes, max_shapes, rng)
        name = f"{split}_{image_id:05d}.png"
        image.save(target / split / name)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for label, outline in shapes:
            annotations.append(coco_annotation(len(annotations) + 1, image_id, category_id(label), outline))
    categories = [{"id": category_id(i), "name": name, "supercategory": "shape"} for i, name in enumerate(classes)]
    path = target / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}),
                    encoding="utf-8")
    return path


def category_id(label: int) -> int:
    return CATEGORY_ID_STEP * (label + 1) + 1


def make_shapes(target: str | Path, classes: list[str], train: int = 60, val: int = 20, size: int = 160,
                max_shapes: int = 3, seed: int = 0) -> dict[str, Path]:
    """Both splits; returns {split: annotation file}."""
    unknown = [c for c in classes if c not in SHAPES]
    if unknown or not classes:
        raise ValueError(f"unknown shape(s) {unknown}; choose from {SHAPES}")
    if min(train, val, max_shapes) < 1 or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"train, val, max_shapes must be >= 1 and size in [{MIN_SIZE}, {MAX_SIZE}]; got "
                         f"{train}, {val}, {max_shapes}, {size}")
    rng = random.Random(seed)
    return {split: write_split(Path(target), split, count, size, list(classes), max_shapes, rng)
            for split, count in (("train", train), ("val", val))}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ToolParser(prog="python -m tools.make_shapes", description=__doc__, allow_abbrev=False,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="folder to write (created; a non-empty one only with --force)")
    parser.add_argument("--classes", nargs="+", default=["circle", "square", "triangle"], choices=SHAPES)
    parser.add_argument("--train", type=int_between(1), default=60, help="training images")
    parser.add_argument("--val", type=int_between(1), default=20, help="validation images")
    parser.add_argument("--size", type=int_between(MIN_SIZE, MAX_SIZE, f" px: detection's min_size is at least "
                                                    f"{MIN_SIZE} px"), default=160, help="image side in px")
    parser.add_argument("--max_shapes", type=int_between(1), default=3, help="shapes per image, at most")
    parser.add_argument("--seed", type=int_between(0), default=0)
    parser.add_argument("--force", action="store_true", help="replace a non-empty TARGET")
    args = parser.parse_args(argv)
    repeated = sorted({name for name in args.classes if args.classes.count(name) > 1})
    if repeated:
        raise UserError(f"--classes names {', '.join(repeated)} more than once; give each shape once")
    check_writable_folder(Path(args.target).resolve(), args.force)
    return args


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        args = parse_args(argv)
        target = Path(args.target).resolve()
        written = replace_folder(target, lambda tree: make_shapes(tree, args.classes, args.train, args.val,
                                                                  args.size, args.max_shapes, args.seed))
        for split, path in written.items():
            print(f"{split}: {target / path.relative_to(path.parents[1])}")
        return 0
    return run_tool(body)


if __name__ == "__main__":
    sys.exit(main())
