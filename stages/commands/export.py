"""``vestwatch export``: PyTorch weights to ONNX (registered as an entry point).

Exit codes: 0 written; 2 the weights could not be loaded or exported.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from stages.commands.detect import EXIT_CANNOT_START, EXIT_OK

log = logging.getLogger("vestwatch")


def run_export_command(args: argparse.Namespace) -> int:
    from stages.detector.checkpoints import WeightsError, load_model
    from stages.detector.export import export_onnx
    from stages.detector.layouts import Layout

    try:
        model = load_model(args.weights)
        out = args.out or args.weights.with_suffix(".onnx")
        layout = Layout.END2END if args.end2end else Layout.RAW if args.raw else Layout.YOLO
        export_onnx(model, out, args.img_size, layout, args.max_det, args.iou, args.conf)
    except (WeightsError, ValueError) as error:
        log.error("%s", error)
        return EXIT_CANNOT_START
    print(f"wrote {out} ({layout.value} layout, dynamic batch, {len(model.names)} classes)")
    return EXIT_OK


def add_export(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export PyTorch weights to ONNX (dynamic batch)")
    parser.add_argument("weights", type=Path, help=".pt (official YOLOv7) or .safetensors weights")
    parser.add_argument("--out", type=Path, help="ONNX file (default: the weights' name with .onnx)")
    parser.add_argument("--img", dest="img_size", type=int, default=640, help="trace size (the graph stays dynamic)")
    layouts = parser.add_mutually_exclusive_group()
    layouts.add_argument("--end2end", action="store_true", help="include NMS in the graph ([K,7] rows)")
    layouts.add_argument("--raw", action="store_true", help="undecoded per-level maps (official export without --grid)")
    parser.add_argument("--conf", type=float, default=0.25, help="end2end: score threshold baked into the graph")
    parser.add_argument("--iou", type=float, default=0.45, help="end2end: NMS IoU threshold baked into the graph")
    parser.add_argument("--max-det", dest="max_det", type=int, default=300, help="end2end: boxes per image")
    parser.set_defaults(run=run_export_command)
