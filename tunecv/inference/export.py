"""Export a trained classifier to ONNX, TorchScript or safetensors (scripts/export.py).

Each exporter writes a temp file; the parity check loads that file back, runs it on a batch of images and compares
its logits with the PyTorch model's. Only a file that passes is renamed into place, so a failed check never
leaves a file that looks like a good export (and an earlier export at the same path stays as it was).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunecv import __version__
from tunecv.config import Config
from tunecv.data.transforms import eval_resize
from tunecv.errors import ONNX_MISSING, UserError
from tunecv.inference.trained import Trained
from tunecv.models.factory import create_model
from tunecv.models.weights import load_exact, load_safetensors_file
from tunecv.train.checkpoint import own_storage
from tunecv.utils.fileio import atomic_target, atomic_write_text

logger = logging.getLogger(__name__)

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}
INPUT_NAME, OUTPUT_NAME = "input", "logits"
DYNAMO_MIN_OPSET = 18  # the dynamo exporter cannot write older opsets (it silently writes 18 instead)
ORT_HINT = "pip install -r requirements-export.txt (or pip install \"tunecv[export]\")"
# torch 2.9+ deprecates torch.jit and the TorchScript-based ONNX exporter; the user cannot act on that here
_DEPRECATED = r"(`torch\.jit\.\w+` is deprecated|You are using the legacy TorchScript-based ONNX export)"


class ParityError(UserError):
    """The exported file computes other logits than the PyTorch model (exit code 1, not the usual 2)."""


@dataclass
class Parity:
    max_abs_diff: float | None  # None: not checked (onnxruntime is missing)
    tolerance: float
    images: int
    batch_sizes: list[int]
    inputs: str  # where the batch came from: "images", "val split", "random"
    max_abs_logit: float | None = None  # the scale the difference is relative to

    def describe(self) -> str:
        if self.max_abs_diff is None:
            return f"parity: not checked (onnxruntime is not installed: {ORT_HINT})"
        what = ("random input" if self.inputs == "random" else "image") + "s" * (self.images != 1)
        batches = " and ".join(map(str, self.batch_sizes))
        return (f"parity: max |logit diff| {self.max_abs_diff:.1e} on {self.images} {what}, "
                f"batch{'es' * (len(self.batch_sizes) > 1)} of {batches} (tolerance {self.tolerance:g})")


@dataclass(frozen=True)
class ExportRequest:
    """What export.py was asked for."""

    fmt: str  # a key of SUFFIXES
    ckpt_path: str
    output: Path
    dynamic_batch: bool = False
    opset: int | None = None  # ONNX only; None: the exporter's default
    tolerance: float = 1e-3  # largest |logit difference| that passes the parity check


def default_output(ckpt_path: str | Path, fmt: str) -> Path:
    ckpt_path = Path(ckpt_path)
    return ckpt_path.parent / "export" / (ckpt_path.stem + SUFFIXES[fmt])


def export_sidecar_path(output: str | Path) -> Path:
    return Path(f"{output}.json")


def refuse_existing(output: Path, overwrite: bool) -> None:
    """Nothing the user had is replaced silently: checked before the (slow) export starts."""
    for path in (output, export_sidecar_path(output)):
        if path.exists() and not overwrite:
            raise UserError(f"{path} exists; --overwrite replaces it (or choose another --output)")


def check_onnx_installed(opset: int | None) -> None:
    if any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxscript")):
        raise UserError(ONNX_MISSING)
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if opset is not None and not 7 <= opset <= newest:
        raise UserError(f"--opset {opset}: give 7 to {newest} (the newest this onnx {onnx.__version__} knows)")


def uses_fixed_batch(fmt: str, dynamic_batch: bool) -> bool:
    # a TorchScript trace and a state_dict take any batch; an ONNX graph has the batch axis it was given
    return fmt == "onnx" and not dynamic_batch


def export_and_check(request: ExportRequest, trained: Trained, images: torch.Tensor,
                     inputs: str) -> tuple[Parity, dict[str, Any]]:
    """Write `trained.model` (on the CPU, fp32, eval mode) at `request.output` if its parity check on `images`
    (from `inputs`: "images", "val split" or "random") passes; (the check, format-specific sidecar keys).

    Raises:
        ParityError: its logits differ from the model's by more than the tolerance; the output is left unchanged.
    """
    model, cfg, fmt = trained.model, trained.cfg, request.fmt
    fixed = uses_fixed_batch(fmt, request.dynamic_batch)
    count = len(images)
    if not fixed and count == 1:  # a second image (the same one) to try a second batch size
        images = images.repeat(2, 1, 1, 1)
    example = images[:1] if fixed else images[:2]  # torch.export would fix a batch axis of size 1
    with atomic_target(request.output) as tmp:
        if fmt == "onnx":
            extra = export_onnx(model, example, tmp, dynamic=not fixed, opset=request.opset)
            run = onnx_runner(tmp)
        elif fmt == "torchscript":
            extra = export_torchscript(model, example, tmp)
            run = torchscript_runner(tmp)
        else:
            extra = export_safetensors(model, cfg, tmp)
            run = safetensors_runner(tmp, cfg, num_classes=len(trained.classes))
        parity = check_parity(run, model, images, request.tolerance, inputs,
                              [1] if fixed else sorted({1, len(images)}))
        parity.images = count
    return parity, extra


def export_onnx(model: nn.Module, example: torch.Tensor, path: str, dynamic: bool, opset: int | None) -> dict:
    legacy = opset is not None and opset < DYNAMO_MIN_OPSET
    kwargs: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": opset}
    if legacy:
        kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None
    else:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},) if dynamic else None
        kwargs["external_data"] = False  # one file; a model over 2 GB would need the weights beside it
    chatter = io.StringIO()  # the exporter prints its progress; it belongs in the debug log, not the console
    with contextlib.redirect_stdout(chatter), _quiet_loggers("torch.onnx", "onnxscript", "onnx_ir"), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATED)
        torch.onnx.export(model, (example,), path, dynamo=not legacy, verbose=False, **kwargs)
    if chatter.getvalue().strip():
        logger.debug("torch.onnx.export: %s", chatter.getvalue().strip())
    written = onnx_opset(path)
    if opset is not None and written != opset:
        logger.warning("--opset %d: the exporter wrote opset %d (it could not convert to %d)", opset, written, opset)
    return {"opset": written, "exporter": f"torch.onnx.export ({'TorchScript-based' if legacy else 'dynamo'})"}


def onnx_opset(path: str) -> int:
    import onnx

    model = onnx.load(path, load_external_data=False)
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def export_torchscript(model: nn.Module, example: torch.Tensor, path: str) -> dict:
    # trace, not script: timm models generally do not script; the parity check proves the trace is faithful
    with _quiet_jit(), torch.no_grad():
        traced = torch.jit.trace(model, (example,), check_trace=False)
        torch.jit.save(traced, path)
    return {"exporter": "torch.jit.trace"}


def export_safetensors(model: nn.Module, cfg: Config, path: str) -> dict:
    from safetensors.torch import save_file

    # header metadata must be str -> str; the sidecar has the rest
    save_file(own_storage(model.state_dict()), path,
              metadata={"format": "pt", "model": cfg.model.model, "tunecv_version": __version__})
    return {"exporter": "safetensors.torch.save_file (the model's state_dict)"}


Runner = Callable[[torch.Tensor], torch.Tensor]


def onnx_runner(path: str) -> Runner | None:
    """onnxruntime on the CPU, or None when it is not installed (the export is then not checked)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its graph-optimiser notices mean nothing to the user
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime has its own error types, e.g. for an opset newer than it knows
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise UserError(f"onnxruntime {ort.__version__} cannot load the exported model ({first}); "
                        "try another --opset or upgrade onnxruntime") from None
    return lambda batch: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0])


def torchscript_runner(path: str) -> Runner:
    with _quiet_jit():
        return torch.jit.load(path, map_location="cpu")


def safetensors_runner(path: str, cfg: Config, num_classes: int) -> Runner:
    """A fresh model from the file alone: proves it holds every weight the architecture needs."""
    with _quiet_loggers("tunecv.models.factory"):  # its "new 3-class head" line would mislead here
        model = create_model(cfg.model, num_classes=num_classes, input_size=cfg.data.image_resize)
    load_exact(model, load_safetensors_file(Path(path)), source=f"{path} (model {cfg.model.model})")
    return model.eval()


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """Hide these loggers' INFO lines: progress notes (the ONNX optimiser's passes), nothing the user acts on."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(max(each.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for each, level in zip(loggers, levels):
            each.setLevel(level)


@contextlib.contextmanager
def _quiet_jit():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATED)
        yield


def check_parity(run: Runner | None, model: nn.Module, images: torch.Tensor, tolerance: float, inputs: str,
                 batch_sizes: list[int]) -> Parity:
    """The largest |logit difference| over `images`, both run in chunks of each batch size (two sizes prove the
    batch axis is not fixed; the same chunks on both sides leave out PyTorch's own batch-size noise)."""
    parity = Parity(None, tolerance, len(images), batch_sizes, inputs)
    if run is None:
        logger.warning("parity not checked: onnxruntime is not installed (%s)", ORT_HINT)
        return parity
    worst = scale = 0.0
    with torch.inference_mode():
        for size in batch_sizes:
            reference = torch.cat([model(chunk).float() for chunk in images.split(size)])
            logits = torch.cat([torch.as_tensor(run(chunk)).float() for chunk in images.split(size)])
            if logits.shape != reference.shape:
                raise ParityError(f"the exported model returned logits of shape {tuple(logits.shape)} for a batch "
                                  f"of {size}; the model {tuple(reference.shape)}")
            worst = max(worst, (logits - reference).abs().max().item())
            scale = max(scale, reference.abs().max().item())
    parity.max_abs_diff, parity.max_abs_logit = worst, scale
    if not worst <= tolerance:  # NaN fails too
        raise ParityError(f"{parity.describe()}: the exported model does not match; nothing written (a larger "
                          "--tolerance keeps it)")
    return parity


def sidecar(request: ExportRequest, trained: Trained, parity: Parity, extra: dict[str, Any]) -> dict[str, Any]:
    """What a deployment needs beside the weights: classes, input size and preprocessing, the temperature."""
    cfg, classes, data, fmt = trained.cfg, trained.classes, trained.cfg.data, request.fmt
    size = [cfg.model.in_channels, data.image_resize, data.image_resize]
    resize, interpolation = eval_resize(data)
    fixed = uses_fixed_batch(fmt, request.dynamic_batch)
    return {
        "format": fmt,
        "file": request.output.name,
        "model": cfg.model.model,
        "classes": list(classes),
        "num_classes": len(classes),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_size": size,
        "input_shape": [1 if fixed else "batch", *size],
        "dynamic_batch": not fixed,
        "input_dtype": "float32",
        # timm's evaluation transform, as validate.py and predict.py apply it
        "preprocessing": f"{'RGB' if size[0] == 3 else 'grayscale'}; resize the shorter side to {resize} px "
                         f"({interpolation}), centre-crop {data.image_resize}x{data.image_resize}, scale to [0, 1], "
                         "subtract mean, divide by std",
        "mean": list(data.mean),
        "std": list(data.std),
        "interpolation": interpolation,
        "crop_pct": data.crop_pct,
        "temperature": trained.temperature,
        "probabilities": "softmax(logits / temperature)",
        **extra,
        "source_checkpoint": str(Path(request.ckpt_path).resolve()),
        "tunecv_version": __version__,
        "torch_version": torch.__version__,
        "parity": asdict(parity),
    }


def write_sidecar(output: Path, info: dict[str, Any]) -> Path:
    path = export_sidecar_path(output)
    atomic_write_text(path, json.dumps(info, indent=2) + "\n")
    return path
