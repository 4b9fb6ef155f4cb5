"""The frozen layers' outputs kept from one run for the next in the same process: a recipe search's frozen-backbone
trials (another lr, another label smoothing) run the backbone once between them, so each costs milliseconds an epoch.

The search owns a `FeatureMemo` and hands it to each trial (`tunecv.scripts.finetune.run(..., feature_memo=)`); a
run without one computes no key. The memo keeps one run's outputs (they may fill much of the GPU) under a key that
holds everything they depend on: the frozen weights and buffers themselves, which parameters train, the model, data
and loader settings, the transforms, the files (content digests from the start-up scan, else size and mtime),
device, dtype and memory format; what the key cannot vouch for (a dataset of an unknown kind) is computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from tunecv.config import Config
from tunecv.utils.runtime import Compute

# (features, labels, dataset indices) of a FeatureLoader, by its description ("train", "val")
Outputs = dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # a default repr's object address: not part of what it does


class FeatureMemo:
    """One run's frozen-layer outputs, by their key, for the next run of the process that has the same key."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.outputs: Outputs = {}

    def outputs_for(self, key: str | None) -> Outputs | None:
        """The outputs kept under `key`, for the run's FeatureLoaders to read and fill: empty for another key (the
        ones kept before are released first, before the new run measures its memory or computes its own); None
        when `key` is None (a dataset the key cannot describe)."""
        if key != self.key:
            self.clear()
        if key is None:
            return None
        self.key = key
        return self.outputs

    def clear(self) -> None:
        """Release the kept outputs (a run that does not use them, or other ones)."""
        on_cuda = any(tensor.is_cuda for kept in self.outputs.values() for tensor in kept)
        self.key, self.outputs = None, {}
        if on_cuda:  # freed blocks stay with PyTorch's allocator: hand them back, so free memory counts them
            torch.cuda.empty_cache()

    def nbytes(self) -> int:
        """The memory the kept outputs take."""
        return sum(tensor.nbytes for kept in self.outputs.values() for tensor in kept)


def features_key(model: nn.Module, compute: Compute, cfg: Config, datasets: Sequence[Any],
                 transforms: Sequence[Callable | None], prefix: object) -> str | None:
    """A digest of what the frozen part's outputs on `datasets` through `transforms` depend on, or None when
    a dataset is of a kind it cannot describe. Call it before training (the first phase's freezing applied), on
    the weights the run computes its features with: a resumed run's load later, so a resumed run takes no memo."""
    digest = hashlib.sha256()
    settings = (cfg.model, cfg.data, cfg.loader, cfg.finetune.feature_views, cfg.train.seed, str(compute.device),
                str(compute.dtype), compute.channels_last, compute.compile, _ADDRESS.sub("", repr(prefix)),
                [_ADDRESS.sub("", repr(t)) for t in transforms])
    digest.update(repr(settings).encode())
    trainable = sorted(name for name, param in model.named_parameters() if param.requires_grad)
    digest.update(repr(trainable).encode())
    trains = set(trainable)
    for name, tensor in model.state_dict().items():  # the frozen weights and every buffer, as they are now
        if name not in trains:
            _add_tensor(digest, name, tensor)
    for dataset in datasets:
        if not _add_dataset(digest, dataset):
            return None
    return digest.hexdigest()


def _add_tensor(digest: Any, name: str, tensor: torch.Tensor) -> None:
    digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest.update(flat.view(torch.uint8).numpy())  # the bytes: bfloat16 has no numpy type


def _add_dataset(digest: Any, dataset: Any) -> bool:
    """The images and labels of `dataset` (None: no validation set); False for a kind it does not know."""
    if dataset is None:
        digest.update(b"no dataset\n")
        return True
    samples, arrays = getattr(dataset, "samples", None), getattr(dataset, "arrays", False)
    if samples is None or arrays is False:
        return False
    digest.update(repr((type(dataset).__name__, list(dataset.classes), getattr(dataset, "image_mode", None),
                        getattr(dataset, "crop_bottom", None), getattr(dataset, "draft_size", None))).encode())
    if arrays is not None:
        digest.update(np.ascontiguousarray(arrays))
        digest.update(json.dumps([label for _, label in samples]).encode())
        return True
    hashes = getattr(dataset, "hashes", {})
    for path, label in samples:
        digest.update(f"{path}\0{label}\0{hashes.get(path)}\0{_stat(path)}\n".encode())
    return True


def _stat(path: str) -> str:
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"
    return f"{stat.st_size} {stat.st_mtime_ns}"
