"""The ``vestwatch bench`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

from stages.config import BUNDLED_WEIGHTS

log = logging.getLogger(__name__)

RESOLUTIONS = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}


def resolution(text: str) -> tuple[int, int]:
    if text in RESOLUTIONS:
        return RESOLUTIONS[text]
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match or int(match[1]) < 64 or int(match[2]) < 64:
        raise argparse.ArgumentTypeError(f"{text!r}: use 720p, 1080p, 360p or WIDTHxHEIGHT (64 or more each)")
    return int(match[1]) // 2 * 2, int(match[2]) // 2 * 2  # yuv420p wants even sides


def counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of cameras, or several separated by commas") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least one camera")
    return values


def add_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="how many cameras this machine holds: the real daemon on live copies of the site clip",
        description="Runs the daemon on N live cameras made from the site clip (RTSP where GStreamer's server "
        "is installed, else real-time files) and prints frames in, processed and dropped, latency, CPU and "
        "memory per process, GPU use, and the decode-only and inference-only limits measured in the same run.",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--streams", type=counts, default=[1], help="cameras; several runs with 4,8,16 (default 1)")
    group.add_argument("--find-max", action="store_true", help="ramp up to the most cameras that hold")
    parser.add_argument("--resolution", type=resolution, default=RESOLUTIONS["720p"], dest="size",
                        help="720p, 1080p, 360p or WxH (default 720p)")  # fmt: skip
    parser.add_argument("--fps", type=float, default=30.0, help="the cameras' frame rate (default 30)")
    parser.add_argument("--detect-fps", type=float, help="detection rate per camera (default: every frame)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured per run (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after every camera's first detection")
    parser.add_argument("--latency-ms", type=float, default=250.0, help="p99 target for --find-max (default 250)")
    parser.add_argument("--max-streams", type=int, default=256, help="--find-max stops there")
    parser.add_argument("--source", choices=["auto", "rtsp", "file"], default="auto",
                        help="cameras over RTSP or as real-time files (default: RTSP when available)")  # fmt: skip
    parser.add_argument("--video", type=Path, help="the clip to make cameras of (default: the site footage)")
    parser.add_argument("--weights", type=Path, default=BUNDLED_WEIGHTS)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--img-size", type=int, default=640)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--preprocess-workers", type=int, default=2)
    parser.add_argument(
        "--cameras-per-process",
        type=int,
        default=1,
        help="captures and stream stages that share a process (pipeline.cameras_per_process)",
    )
    parser.add_argument("--no-record", action="store_true", help="cameras not recorded (recording costs CPU)")
    parser.add_argument(
        "--recording",
        choices=["annotated", "camera"],
        default="annotated",
        help="recording.video: re-encoded with the boxes drawn (default), or the camera's own H.264 copied",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    args.detect_fps = args.detect_fps or args.fps
    if args.detect_fps > args.fps:
        log.error("--detect-fps %g exceeds the cameras' --fps %g", args.detect_fps, args.fps)
        return 2
    if args.video is not None and not args.video.is_file():
        log.error("--video %s: no such file", args.video)
        return 2
    try:
        from stages.commands.bench.bench import bench  # torch, OpenCV, PyAV: not for every vestwatch command

        result = bench(args)
    except (RuntimeError, OSError) as error:
        log.error("bench: %s", error)
        return 1
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0
