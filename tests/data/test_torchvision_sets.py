"""torchvision datasets by name: read through torchvision into tunecv's dataset; offline, one clear error."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tunecv.config import DataConfig
from tunecv.data.datasets import create_dataset
from tunecv.data.torchvision_sets import DATASETS, torchvision_split
from tunecv.errors import UserError


def _fake_dtd(root: Path) -> None:
    """The Describable Textures layout torchvision reads: dtd/dtd/images/<class>/*.jpg + labels/<split>1.txt."""
    base = root / "dtd" / "dtd"
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        lines = []
        for name, color in (("banded", (200, 30, 30)), ("dotted", (30, 30, 200))):
            for i in range(3):
                relative = f"{name}/{name}_{split}_{i}.jpg"
                path = base / "images" / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                noise = rng.integers(-20, 20, (24, 24, 3))
                Image.fromarray((np.array(color) + noise).clip(0, 255).astype("uint8")).save(path)
                lines.append(relative)
        (base / "labels").mkdir(parents=True, exist_ok=True)
        (base / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")


def test_dtd_read_through_torchvision(tmp_path):
    _fake_dtd(tmp_path)
    cfg = DataConfig(dataset="dtd", data_dir=str(tmp_path))
    train = create_dataset(cfg, "train", None)
    val = create_dataset(cfg, "val", None, classes=train.classes)
    assert train.classes == ["banded", "dotted"] and len(train) == 6 and len(val) == 6
    assert train.targets == [0, 0, 0, 1, 1, 1]
    assert all("_train_" in Path(path).name for path, _ in train.samples)
    image, label, _ = train[3]
    assert image.size == (24, 24) and label == 1 and image.getpixel((5, 5))[2] > 150


def test_missing_val_split_maps_to_test():
    assert torchvision_split("food101", "val") == "test"
    assert torchvision_split("oxford_iiit_pet", "train") == "trainval"
    assert torchvision_split("flowers102", "val") == "val"
    with pytest.raises(UserError, match="cifar10 has the splits train, test"):
        torchvision_split("cifar10", "holdout")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_absent_dataset_is_one_clear_error(tmp_path, name):
    with pytest.raises(UserError) as info:
        create_dataset(DataConfig(dataset=name, data_dir=str(tmp_path)), "train", None)
    message = str(info.value)
    assert message.startswith(f"{name} not found in {tmp_path}; set dataset_download: true to fetch it there")
    assert "download=True" not in message and "You can use" not in message  # torchvision's words, not our keys
    assert "download it and place " in message and f"{tmp_path}/" in message  # where the files go by hand
    assert "\n" not in message and message.count(". ") == 0  # one sentence


def test_aircraft_without_the_annotation_level_file_names_that_file(tmp_path):
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    (data / "images").mkdir(parents=True)
    (data / "variants.txt").write_text("A320\n")
    (data / "images_variant_train.txt").write_text("0001 A320\n")
    cfg = DataConfig(dataset="fgvc_aircraft", data_dir=str(tmp_path), annotation_level="family")
    with pytest.raises(UserError) as info:
        create_dataset(cfg, "train", None)
    assert str(info.value) == (f"{data / 'families.txt'} is missing, and annotation_level family needs it; extract "
                               f"the whole fgvc-aircraft-2013b.tar.gz into {tmp_path} again, or set another "
                               "annotation_level (variant, family, manufacturer)")


def _online() -> bool:
    try:
        socket.getaddrinfo("www.cs.toronto.edu", 443)
    except OSError:
        return False
    return True


@pytest.mark.skipif(_online(), reason="the network is reachable: the download would really run")
def test_download_offline_fails_clearly(tmp_path):
    with pytest.raises(UserError, match=f"downloading cifar10 into {tmp_path} failed .*check the internet"):
        create_dataset(DataConfig(dataset="cifar10", data_dir=str(tmp_path), dataset_download=True), "train", None)


def test_dtd_trains_and_validates_end_to_end(tmp_path, capsys):
    from tunecv.scripts import finetune, validate

    _fake_dtd(tmp_path / "data")
    out = tmp_path / "ckpt"
    argv = ["--dataset", "dtd", "--data_dir", str(tmp_path / "data"), "--model", "test_efficientnet",
            "--image_resize", "32", "--batch_size", "4", "--epoch_size", "1", "--num_parallel_workers", "0",
            "--device", "cpu", "--ckpt_save_dir", str(out)]
    assert finetune.main(argv) == 0
    best = float((out / "results.txt").read_text().splitlines()[-1].split()[2])
    capsys.readouterr()
    assert validate.main(["--ckpt_path", str(out / "test_efficientnet_best.pth")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("6 images: loss") and f"top1 {best:.2f}" in printed
