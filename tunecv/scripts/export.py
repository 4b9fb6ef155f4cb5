"""Export a checkpoint written by finetune.py to ONNX, TorchScript or safetensors, with a JSON sidecar (classes,
input size, mean/std, temperature) and a parity check: the exported file, loaded back, must give the PyTorch
model's logits on real images (--images, else the checkpoint's validation split) within --tolerance.

    python export.py --ckpt_path ckpt/run/tf_efficientnet_lite0_best.pth --format onnx --dynamic_batch
    python export.py --ckpt_path X --format torchscript --images photos/ --output model.pt
    python export.py --ckpt_path X --format safetensors --overwrite

The export runs on the CPU in fp32 whatever device the model was trained on. Default output:
<checkpoint folder>/export/<checkpoint name>.onnx|.pt|.safetensors, its sidecar <output>.json.
Exit codes: 0 written; 1 the parity check failed (nothing written, an earlier export stays); 2 bad input
(missing checkpoint, existing output without --overwrite, the ONNX extra not installed, ...).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from tunecv import cli
from tunecv.config import UserError
from tunecv.inference.export import (
    SUFFIXES,
    ExportRequest,
    Parity,
    ParityError,
    check_onnx_installed,
    default_output,
    export_and_check,
    refuse_existing,
    sidecar,
    write_sidecar,
)
from tunecv.inference.parity import parity_batch
from tunecv.inference.trained import load_trained

logger = logging.getLogger("tunecv")

# exported files are fp32 CPU graphs; an autocast model would trace into something else (the memory format is set
# on the model itself: contiguous)
CPU_FP32 = {"device": "cpu", "amp_level": "O0"}


def run(args, overrides: dict) -> tuple[list[Path], Parity]:
    output = Path(args.output) if args.output else default_output(args.ckpt_path, args.format)
    if output.resolve() == Path(args.ckpt_path).resolve():
        raise UserError(f"--output {output} is the checkpoint itself; choose another file")
    refuse_existing(output, args.overwrite)
    if args.format == "onnx":
        check_onnx_installed(args.opset)
    if str(overrides.get("device", "cpu")) not in ("cpu", "auto"):
        logger.info("export runs on the CPU in fp32; --device %s is not used", overrides["device"])
    trained = load_trained(args.ckpt_path, args.config, {**overrides, **CPU_FP32}, args.cfg_options)
    if "export" not in trained.task.tools:
        raise UserError(f"{args.ckpt_path} is a {trained.task.name} checkpoint; export.py exports classifiers (its "
                        "weights are in the checkpoint's 'model' state_dict)")
    trained.model = trained.model.to("cpu", memory_format=torch.contiguous_format).float().eval().requires_grad_(False)
    images, source = parity_batch(trained, args.images)
    request = ExportRequest(args.format, args.ckpt_path, output, args.dynamic_batch, args.opset, args.tolerance)
    parity, extra = export_and_check(request, trained, images, source)
    info = sidecar(request, trained, parity, extra)
    return [output, write_sidecar(output, info)], parity


@cli.closes_quietly_on_broken_pipe
def main(argv: list[str] | None = None) -> int:
    parser = cli.build_parser("export.py", "Export a tunecv checkpoint to ONNX, TorchScript or safetensors and "
                              "check the exported file against the model (any config key can be overridden, e.g. "
                              "--image_resize).", exclude=("ckpt_path", "overwrite"))
    parser.add_argument("--ckpt_path", required=True, help="checkpoint written by finetune.py")
    parser.add_argument("--format", required=True, choices=sorted(SUFFIXES), help="what to write")
    parser.add_argument("--output", help="the exported file (default: <checkpoint folder>/export/<checkpoint "
                        "name>.onnx|.pt|.safetensors); its sidecar is <output>.json")
    parser.add_argument("--dynamic_batch", action="store_true",
                        help="ONNX: any batch size (default: batch 1); TorchScript and safetensors take any batch")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's); below 18 uses the "
                        "TorchScript-based exporter")
    parser.add_argument("--images", nargs="+", metavar="PATH", help="image files, folders or patterns for the "
                        "parity check (default: the checkpoint's validation split, when its data is here)")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest |logit difference| to the PyTorch model that passes (default: 1e-3; fp32 "
                             "exports differ by 1e-7 to 1e-4, real export bugs by 1e-2 and more)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output and sidecar")
    try:
        args, overrides = cli.parse_args(parser, argv, script_flags=(
            "ckpt_path", "format", "output", "dynamic_batch", "opset", "images", "tolerance", "overwrite"))
        if not args.tolerance >= 0:
            raise UserError(f"--tolerance {args.tolerance}: give a number >= 0")
        cli.setup_logging(args.quiet, args.verbose, hold=True)
        written, parity = run(args, overrides)
        cli.release_console()  # the checks passed: the lines they held go out
    except (UserError, RuntimeError, OSError, KeyboardInterrupt) as err:  # one line, no traceback
        code = cli.failure_exit(err)
        if code is None:
            raise
        return 1 if isinstance(err, ParityError) else code
    for path in written:
        print(path)
    print(parity.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
