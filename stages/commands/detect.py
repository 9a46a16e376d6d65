"""The ``vestwatch detect`` subcommand (registered as an entry point); the work is in ``detect_media``.

Exit codes: 0 everything worked; 1 some inputs failed (the rest were processed);
2 nothing could start (bad config, weights, device or arguments).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.settings import ConfigError, load_settings
from stages.config import DEFAULT_CONFIG, DetectorSettings, Settings

log = logging.getLogger("vestwatch")

EXIT_OK, EXIT_SOME_FAILED, EXIT_CANNOT_START = 0, 1, 2


def _add_detector_options(parser: argparse.ArgumentParser) -> None:
    """Flags that override the config's ``[detector]`` section."""
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help=f"config file (default: {DEFAULT_CONFIG.name} of the installation)",
    )
    parser.add_argument("--weights", type=Path, help="model: .pt (official YOLOv7), .safetensors or .onnx")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--img", dest="img_size", type=int, help="letterbox size, a multiple of 32")
    parser.add_argument("--conf", type=float, help="confidence threshold")
    parser.add_argument("--iou", type=float, help="NMS IoU threshold")
    parser.add_argument("--max-det", dest="max_det", type=int, help="at most this many boxes per image")
    parser.add_argument("--classes", type=int, nargs="+", help="keep only these class ids")
    parser.add_argument("--agnostic", action="store_true", default=None, help="NMS across classes")


def detector_settings(args: argparse.Namespace) -> DetectorSettings:
    """The config's ``[detector]`` section with the command line's flags on top, validated."""
    config = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    base = load_settings(Settings, config).detector
    overrides: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("weights", "device", "img_size", "conf", "iou", "max_det", "classes", "agnostic")
        if getattr(args, key, None) is not None
    }
    try:
        return DetectorSettings.model_validate({**base.model_dump(exclude_unset=True), **overrides})
    except ValidationError as error:
        first = error.errors()[0]
        raise ConfigError(f"--{first['loc'][0]}: {first['msg']}") from None


def run_detect_command(args: argparse.Namespace) -> int:
    from stages.capture.sources.media_files import expand_sources
    from stages.commands.detect_media import run_detect
    from stages.detector.detector import detector_from_settings

    try:
        settings = detector_settings(args)
        for flag in ("batch", "frames"):
            if getattr(args, flag) < 1:
                raise ConfigError(f"--{flag}: must be at least 1, got {getattr(args, flag)}")
        files, errors = expand_sources(args.sources)
        for error in errors:
            log.error("%s", error)
        if not files:
            log.error("nothing to do: no image, video or live source among the sources")
            return EXIT_CANNOT_START
        detector = detector_from_settings(settings)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        log.error("%s", error)
        return EXIT_CANNOT_START
    log.info(
        "model %s (%d classes) on %s, %d file(s) -> %s",
        settings.weights.name,
        len(detector.names),
        detector.device,
        len(files),
        args.out,
    )
    summary = run_detect(detector, files, args.out, args.batch, args.frames)
    summary.failed[:0] = errors
    print(summary.table())
    print(f"results in {args.out}")
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


def add_detect(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="detect on images, videos, folders, globs or live sources; write annotated copies and JSON",
        description="Annotated copies go to --out with NAME.json (images) or NAME.jsonl (videos, a line per "
        "frame), and summary.json; a summary table is printed.",
    )
    parser.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="image, video, folder (recursive), glob, camera or rtsp:// URL"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/detect"), help="output folder (default runs/detect)")
    parser.add_argument("--batch", type=int, default=1, help="video frames per inference batch")
    parser.add_argument("--frames", type=int, default=300, help="live sources (camera, rtsp://): frames to take")
    _add_detector_options(parser)
    parser.set_defaults(run=run_detect_command)
