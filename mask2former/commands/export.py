"""``mask2former export``: a checkpoint to one self-describing .onnx (or a torch.export .pt2)."""
from __future__ import annotations

import argparse
import os
import sys

from ..io import atomic_path


def add_parser(sub: argparse._SubParsersAction, default_model: str) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (standard ops, dynamic sizes, metadata inside)")
    p.add_argument("model", nargs="?", default=default_model, help="HF folder, hub id or original .pkl")
    p.add_argument("--format", choices=["onnx", "pt2"], default="onnx",
                   help="onnx (default) or pt2 (torch.export program, dynamic batch/height/width)")
    p.add_argument("--output", help="file to write (default: model.onnx / model.pt2)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18; GridSample needs >= 16)")
    p.add_argument("--postprocess", choices=["semantic", "panoptic", "instance"], default=None,
                   help="semantic: the graph outputs the label map (panoptic/instance stay in Python)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import DEFAULT_OPSET, ExportError, check_options, export_model, export_onnx
    from ..model import Mask2FormerForUniversalSegmentation

    output = args.output or ("model.onnx" if args.format == "onnx" else "model.pt2")
    if args.format == "onnx":
        opset = DEFAULT_OPSET if args.opset is None else args.opset
        check_options(opset, args.postprocess)  # before the (slow) model load
        model = Mask2FormerForUniversalSegmentation.from_pretrained(args.model)
        report = export_onnx(model, output, opset=opset, postprocess=args.postprocess, name=args.model)
        print(f"wrote {report.path} ({report.bytes / 2**20:.1f} MiB, opset {report.opset}, {report.graph} graph, "
              f"{report.seconds:.0f} s)", file=sys.stderr)
        return 0
    if args.opset is not None or args.postprocess:
        raise ExportError("--opset and --postprocess apply to --format onnx")
    import torch

    model = Mask2FormerForUniversalSegmentation.from_pretrained(args.model)
    program = export_model(model)
    with atomic_path(output) as tmp:  # a temporary .pt2 name (torch.export.save wants one), renamed when complete
        torch.export.save(program, tmp)
    print(f"wrote {output} (torch.export program; load with torch.export.load)", file=sys.stderr)
    return 0
