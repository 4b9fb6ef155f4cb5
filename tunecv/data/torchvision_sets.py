"""torchvision's classification datasets by name (`dataset: cifar10`, `flowers102`, ...), read into tunecv's
own dataset so skipping, cropping and relabelling work the same; `dataset_download: true` fetches them."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunecv.data.layouts import AIRCRAFT_LEVEL_FILES, Labelled
from tunecv.errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    cls: str  # torchvision.datasets class name
    splits: tuple[str, ...]
    by_hand: str  # where the files go when placed without download


DATASETS = {
    "cifar10": Source("CIFAR10", ("train", "test"),
                      "cifar-10-python.tar.gz extracted to <data_dir>/cifar-10-batches-py/"),
    "cifar100": Source("CIFAR100", ("train", "test"),
                       "cifar-100-python.tar.gz extracted to <data_dir>/cifar-100-python/"),
    "flowers102": Source("Flowers102", ("train", "val", "test"),
                         "102flowers.tgz, imagelabels.mat and setid.mat in <data_dir>/flowers-102/"),
    "fgvc_aircraft": Source("FGVCAircraft", ("train", "val", "trainval", "test"),
                            "fgvc-aircraft-2013b.tar.gz extracted to <data_dir>/fgvc-aircraft-2013b/"),
    "oxford_iiit_pet": Source("OxfordIIITPet", ("trainval", "test"),
                              "images.tar.gz and annotations.tar.gz extracted to <data_dir>/oxford-iiit-pet/"),
    "dtd": Source("DTD", ("train", "val", "test"), "dtd-r1.0.1.tar.gz extracted to <data_dir>/dtd/ (dtd/dtd/images)"),
    "food101": Source("Food101", ("train", "test"), "food-101.tar.gz extracted to <data_dir>/food-101/"),
    "stanford_cars": Source("StanfordCars", ("train", "test"), "the Stanford Cars files in <data_dir>/stanford_cars/"),
}


def torchvision_split(name: str, split: str) -> str:
    """Our split name in the dataset's terms: a 'val' the dataset does not have is its 'test' split."""
    splits = DATASETS[name].splits
    if split in splits:
        return split
    if split == "val" and "test" in splits:
        logger.info("%s has no val split; validating on test", name)
        return "test"
    if split == "train" and "trainval" in splits:
        return "trainval"
    raise UserError(f"{name} has the splits {', '.join(splits)}, not {split!r}; set train_split/val_split")


@functools.lru_cache(maxsize=2)  # the class list is read before the dataset is built: one load serves both
def load(name: str, root: str, split: str, download: bool, annotation_level: str) -> tuple[Labelled, np.ndarray | None]:
    """(pairs of file path and class name, None) for file datasets; (class names only, uint8 arrays) for CIFAR."""
    import torchvision.datasets as tv

    source = DATASETS[name]
    part = torchvision_split(name, split)
    kwargs: dict = {"root": root, "download": download}
    if name.startswith("cifar"):
        kwargs["train"] = part == "train"
    else:
        kwargs["split"] = part
    if name == "fgvc_aircraft":
        kwargs["annotation_level"] = annotation_level
        check_aircraft_files(Path(root), annotation_level, part)
    try:
        dataset = getattr(tv, source.cls)(**kwargs)
    except Exception as err:  # torchvision raises RuntimeError when missing, URLError/OSError when offline
        raise UserError(not_found(name, Path(root).resolve(), download, err)) from None
    return _labelled(name, dataset)


def not_found(name: str, root: Path, download: bool, err: Exception) -> str:
    """One sentence: which dataset, the folder looked in, the fix. torchvision's own text ("You can use
    download=True") names its argument, not our key, so it is only kept for a failed download (the network's
    reason)."""
    by_hand = DATASETS[name].by_hand.replace("<data_dir>", str(root))
    if not download:
        return (f"{name} not found in {root}; set dataset_download: true to fetch it there (needs internet), or on a "
                f"machine with internet download it and place {by_hand}")
    reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    return (f"downloading {name} into {root} failed ({reason}); check the internet connection, or on a machine with "
            f"internet download it and place {by_hand}")


def check_aircraft_files(root: Path, level: str, split: str) -> None:
    """FGVC-Aircraft's class list and split list of the annotation level, when the dataset folder is there (an
    absent folder is `not_found`'s)."""
    data = root / "fgvc-aircraft-2013b" / "data"
    if not data.is_dir():
        return
    for needed in (data / AIRCRAFT_LEVEL_FILES[level], data / f"images_{level}_{split}.txt"):
        if not needed.is_file():
            raise UserError(f"{needed} is missing, and annotation_level {level} needs it; extract the whole "
                            f"fgvc-aircraft-2013b.tar.gz into {root.resolve()} again, or set another annotation_level "
                            f"({', '.join(AIRCRAFT_LEVEL_FILES)})")


def _labelled(name: str, dataset) -> tuple[Labelled, np.ndarray | None]:
    classes = [str(c) for c in getattr(dataset, "classes", [])]
    if name.startswith("cifar"):
        targets = [int(t) for t in dataset.targets]
        pairs = [(f"{name}/{i:05d}", classes[t]) for i, t in enumerate(targets)]
        return Labelled(pairs, classes), np.asarray(dataset.data)
    if name == "stanford_cars":
        files, labels = zip(*dataset._samples) if dataset._samples else ((), ())
    else:
        files = getattr(dataset, "_image_files", None) or dataset._images
        labels = dataset._labels
    if not classes:  # Flowers102 ships no class names
        classes = [str(i) for i in range(max(labels) + 1)]
    return Labelled([(str(f), classes[int(label)]) for f, label in zip(files, labels)], classes), None
