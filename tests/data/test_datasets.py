"""Datasets: ImageFolder layout, labels, relabelling, file discovery, image modes, EXIF, digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS
from tunecv.config import DataConfig
from tunecv.data.datasets import check_split, create_dataset
from tunecv.errors import UserError


def _folder(root: Path) -> DataConfig:
    return DataConfig(dataset="folder", data_dir=str(root))


def _png(path: Path, color=(10, 200, 30), size=(12, 8), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def test_classes_sorted_and_labels(tiny_image_folder):
    train = create_dataset(_folder(tiny_image_folder), "train", None)
    assert train.classes == sorted(CLASSES)
    assert len(train) == len(CLASSES) * TRAIN_PER_CLASS
    for path, label in train.samples:
        assert Path(path).parent.name == train.classes[label]
    assert train.targets == [label for _, label in train.samples]
    image, label, index = train[0]
    assert index == 0
    assert isinstance(image, Image.Image) and image.mode == "RGB" and label == 0


def test_class_order_is_sorted_not_creation_order(tmp_path):
    for name in ("zebra", "apple", "Mango"):
        _png(tmp_path / "train" / name / "a.png")
    assert create_dataset(_folder(tmp_path), "train", None).classes == ["Mango", "apple", "zebra"]


def test_val_relabelled_with_train_classes(tiny_image_folder, tmp_path):
    # val has only two of the three classes: labels must still be the training indices
    val_root = tmp_path / "partial"
    for name in ("stripes", "circle"):
        for i in range(2):
            _png(val_root / "val" / name / f"{i}.png")
    train = create_dataset(_folder(tiny_image_folder), "train", None)
    val = create_dataset(_folder(val_root), "val", None, classes=train.classes)
    assert val.classes == train.classes
    for path, label in val.samples:
        assert train.classes[label] == Path(path).parent.name
    assert sorted(set(val.targets)) == [train.classes.index("circle"), train.classes.index("stripes")]


def test_val_class_not_in_train(tiny_image_folder):
    _png(tiny_image_folder / "val" / "triangle" / "t.png")
    train = create_dataset(_folder(tiny_image_folder), "train", None)
    with pytest.raises(UserError, match="triangle"):
        create_dataset(_folder(tiny_image_folder), "val", None, classes=train.classes)


def test_nested_folders_upper_case_extensions_hidden_files(tmp_path):
    root = tmp_path / "train"
    found = [_png(root / "a" / "top.PNG"), _png(root / "a" / "deep" / "er" / "x.JPG"), _png(root / "b" / "y.jpeg")]
    (root / "a" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / "a" / "._top.PNG").write_bytes(b"AppleDouble junk")  # would be a corrupt image if read
    _png(root / "a" / ".ipynb_checkpoints" / "copy.png")
    _png(root / ".hidden_class" / "z.png")
    (root / "b" / "readme.txt").write_text("not an image")
    dataset = create_dataset(_folder(tmp_path), "train", None)
    assert dataset.classes == ["a", "b"]
    assert sorted(path for path, _ in dataset.samples) == sorted(str(p) for p in found)


@pytest.mark.parametrize("mode, color", [("L", 128), ("RGBA", (10, 20, 30, 255)), ("CMYK", (0, 255, 255, 0)),
                                         ("LA", (90, 255))])
def test_image_modes_come_out_rgb(tmp_path, mode, color):
    suffix = ".jpg" if mode == "CMYK" else ".png"
    _png(tmp_path / "train" / "a" / f"img{suffix}", color=color, mode=mode)
    image, _, _ = create_dataset(_folder(tmp_path), "train", None)[0]
    assert image.mode == "RGB" and image.size == (12, 8)


def test_palette_and_transparency(tmp_path):
    palette = Image.new("RGB", (12, 8), (200, 0, 0)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    (tmp_path / "train" / "a").mkdir(parents=True)
    palette.save(tmp_path / "train" / "a" / "p.png")
    _png(tmp_path / "train" / "a" / "t.png", color=(0, 0, 0, 0), mode="RGBA")  # fully transparent black
    dataset = create_dataset(_folder(tmp_path), "train", None)
    rgb = {Path(path).name: np.asarray(dataset[i][0]) for i, (path, _) in enumerate(dataset.samples)}
    assert dataset[0][0].mode == dataset[1][0].mode == "RGB"
    assert tuple(rgb["p.png"][0, 0]) == (200, 0, 0)
    assert tuple(rgb["t.png"][0, 0]) == (255, 255, 255)  # transparency composited on white


def test_16_bit_grayscale_keeps_its_content(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 32, dtype=np.uint16), (8, 1))
    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.fromarray(ramp).save(tmp_path / "train" / "a" / "ramp16.png")
    image, _, _ = create_dataset(_folder(tmp_path), "train", None)[0]
    pixels = np.asarray(image)[0, :, 0].astype(int)
    assert image.mode == "RGB"
    assert pixels[0] < 10 and pixels[-1] > 245 and (pixels < 128).sum() > 10


def test_exif_orientation_applied(tmp_path):
    path = tmp_path / "train" / "a" / "rotated.jpg"
    path.parent.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    Image.new("RGB", (40, 20), (0, 100, 200)).save(path, exif=exif)
    image, _, _ = create_dataset(_folder(tmp_path), "train", None)[0]
    assert image.size == (20, 40)


def test_split_folder_missing(tmp_path):
    _png(tmp_path / "training" / "a" / "x.png")
    with pytest.raises(UserError, match="found: training"):
        create_dataset(_folder(tmp_path), "train", None)
    check_split(_folder(tmp_path), "training")
    with pytest.raises(UserError, match="val_while_train false"):
        check_split(_folder(tmp_path), "val", hint="--val_while_train false trains without validation")


def test_split_without_class_folders(tmp_path):
    _png(tmp_path / "train" / "loose.png")
    with pytest.raises(UserError, match="no class folders"):
        create_dataset(_folder(tmp_path), "train", None)


def test_class_folder_without_images(tiny_image_folder):
    (tiny_image_folder / "train" / "empty").mkdir()
    with pytest.raises(UserError, match="empty"):
        create_dataset(_folder(tiny_image_folder), "train", None)


@pytest.mark.parametrize("content", [b"", b"GIF89a not really"])
def test_unreadable_image_found_before_training(tiny_image_folder, content):
    bad = tiny_image_folder / "val" / "circle" / "bad.gif"
    bad.write_bytes(content)
    strict = DataConfig(dataset="folder", data_dir=str(tiny_image_folder), on_bad_image="error")
    with pytest.raises(UserError, match="bad.gif"):
        create_dataset(strict, "val", None)
    skipped = create_dataset(_folder(tiny_image_folder), "val", None)
    assert [path for path, _ in skipped.bad_images] == [str(bad)]
    assert str(bad) not in {path for path, _ in skipped.samples}
    assert len(skipped) == len(CLASSES) * VAL_PER_CLASS


def test_val_split_sizes(tiny_image_folder):
    assert len(create_dataset(_folder(tiny_image_folder), "val", None)) == len(CLASSES) * VAL_PER_CLASS


def test_digits_split():
    cfg = DataConfig(dataset="digits")
    train, val = create_dataset(cfg, "train", None), create_dataset(cfg, "val", None)
    assert (len(train), len(val)) == (1437, 360)
    assert train.classes == val.classes == [str(d) for d in range(10)]
    assert set(train.targets) == set(val.targets) == set(range(10))
    assert not {p for p, _ in train.samples} & {p for p, _ in val.samples}
    again = create_dataset(cfg, "val", None)
    assert again.samples == val.samples and np.array_equal(again.arrays, val.arrays)
    image, _, _ = val[0]
    assert image.mode == "RGB" and image.size == (8, 8)
    with pytest.raises(UserError, match="splits"):
        create_dataset(cfg, "test", None)


def test_any_format_pil_reads_is_found(tmp_path):
    _png(tmp_path / "train" / "a" / "x.png")
    Image.new("RGB", (12, 8), (1, 2, 3)).save(tmp_path / "train" / "a" / "y.jfif", format="JPEG")
    Image.new("RGB", (12, 8), (1, 2, 3)).save(tmp_path / "train" / "a" / "z.ico", format="ICO")
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    dataset = create_dataset(_folder(tmp_path), "train", None)
    assert sorted(Path(p).name for p, _ in dataset.samples) == ["x.png", "y.jfif", "z.ico"]


def test_float_tiff_keeps_its_content(tmp_path):
    ramp = np.tile(np.linspace(0.0, 1.0, 32, dtype=np.float32), (8, 1))
    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.fromarray(ramp, mode="F").save(tmp_path / "train" / "a" / "ramp.tif")
    image = create_dataset(_folder(tmp_path), "train", None).load_image(0)
    pixels = np.asarray(image)[0, :, 0]
    assert image.mode == "RGB" and pixels[0] == 0 and pixels[-1] == 255 and 100 < pixels[16] < 160


def test_jpeg_draft_decodes_at_a_reduced_scale_that_covers_the_size(tmp_path):
    path = tmp_path / "train" / "a" / "big.jpg"
    path.parent.mkdir(parents=True)
    Image.new("RGB", (800, 600), (10, 120, 200)).save(path, quality=90)
    dataset = create_dataset(_folder(tmp_path), "train", None, draft_size=140)
    assert dataset.load_image(0).size == (200, 150)  # 1/4 scale: the smallest that keeps >= 140 px
    full = create_dataset(_folder(tmp_path), "train", None)
    assert full.load_image(0).size == (800, 600)
    off = DataConfig(dataset="folder", data_dir=str(tmp_path), jpeg_draft=False)
    assert create_dataset(off, "train", None, draft_size=140).load_image(0).size == (800, 600)


def test_draft_sizes_cover_the_crops():
    from tunecv.data import draft_size

    cfg = DataConfig(image_resize=224, scale=(0.25, 1.0), crop_pct=0.875)
    assert draft_size(cfg, is_training=True) == 448 and draft_size(cfg, is_training=False) == 256


def test_animated_gif_gives_its_first_frame(tmp_path):
    path = tmp_path / "train" / "a" / "anim.gif"
    path.parent.mkdir(parents=True)
    frames = [Image.new("RGB", (10, 10), color) for color in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    image = create_dataset(_folder(tmp_path), "train", None).load_image(0)
    assert image.mode == "RGB" and image.getpixel((5, 5))[0] > 200
