"""The daemon's throughput against its limits and against the naive loop, measured in one run.

    python bench/pipeline_throughput.py                       # site footage if ../shared has it, else the demo clip
    python bench/pipeline_throughput.py --streams 4 --frames 600 --device cuda --max-batch 16

Four figures, all on the same frames:

- decode only: PyAV decoding the clip, nothing else (capture's ceiling per stream);
- inference only: the detector on frames letterboxed in advance, in batches of ``--max-batch``
  (forward pass and NMS: the inference stage's ceiling);
- naive loop: one process decoding, detecting frame by frame, drawing and encoding H.264
  (what ``vestwatch detect`` does on a video, the desktop tool's loop);
- pipeline: ``vestwatch run`` with ``--streams`` offline copies of the clip (lossless, recorded),
  counted by a subscriber from the first ``det.`` message to the last.

Without ``--weights`` it uses the bundled model. Prints a Markdown table for bench/RESULTS.md with the device named.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from detector_throughput import device_name  # a sibling: python puts bench/ on the path

from pipeline.subscriber import subscribe
from stages.capture.sources.demo import demo_clip
from stages.capture.sources.media_files import MediaFile
from stages.commands.bench.bench import start_daemon, status
from stages.commands.bench.ceilings import inference_only
from stages.commands.bench.processes import rss_mib
from stages.commands.detect_media import run_detect
from stages.config import BUNDLED_WEIGHTS
from stages.detector.backends import resolve_device
from stages.detector.detector import Detector, load_detector
from stages.media.video import VideoReader

SITE_FOOTAGE = Path(__file__).resolve().parents[2] / "shared" / "media" / "construction-site.mp4"


def cut_clip(source: Path, frames: int, target: Path) -> Path:
    """The first ``frames`` frames of ``source`` as H.264 without audio, so every figure sees the same input."""
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-i", str(source), "-an", "-frames:v", str(frames)),
            *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(target)),
        ],
        check=True,
    )
    return target


def decode_only(clip: Path) -> tuple[float, list[np.ndarray]]:
    """Frames per second of decoding alone; also returns the frames for the inference figure."""
    start = time.perf_counter()
    with VideoReader(clip) as reader:
        images = [frame.image for frame in reader.frames()]
    return len(images) / (time.perf_counter() - start), images


def naive_loop(detector: Detector, clip: Path, out_dir: Path) -> float:
    """Frames per second of decode -> detect (batch 1) -> draw -> encode in one process."""
    detector.detect([np.zeros((64, 64, 3), np.uint8)])  # warm-up, as the other figures have
    start = time.perf_counter()
    summary = run_detect(detector, [MediaFile(clip, "video", Path(clip.name))], out_dir)
    if summary.failed:
        raise RuntimeError(f"naive loop failed: {summary.failed}")
    return summary.frames / (time.perf_counter() - start)


def daemon_config(
    work: Path, clip: Path, weights: Path, args: argparse.Namespace, port: int, processors: list[str]
) -> Path:
    streams = "".join(
        f'[[streams]]\nid = "s{i}"\nurl = {json.dumps(str(clip))}\nrealtime = false\nrecord = true\n'
        f"processors = {json.dumps(processors)}\n\n"
        for i in range(args.streams)
    )
    config = work / "bench.toml"
    config.write_text(
        f"recordings_dir = {json.dumps(str(work / 'recordings'))}\n"
        f"runtime_dir = {json.dumps(str(work / 'run'))}\n"
        f'publish = "pub+bind:tcp://127.0.0.1:{port}"\n'
        f'http = "127.0.0.1:{port + 1}"\n'
        f"[detector]\nweights = {json.dumps(str(weights))}\ndevice = {json.dumps(args.device)}\n"
        f"img_size = {args.img}\n"
        f"[pipeline]\nmax_batch = {args.max_batch}\npreprocess_workers = {args.preprocess_workers}\n\n" + streams
    )
    return config


def stage_rss_mib(daemon_pid: int, http_port: int) -> dict[str, float]:
    """Resident memory of the supervisor and of each stage process, by stage name (pids from /status.json)."""
    stages = status(http_port)["stages"]
    rss = {"supervisor": rss_mib(daemon_pid)}
    for name, stage in stages.items():
        with contextlib.suppress(OSError, StopIteration, TypeError):  # restarting or gone meanwhile
            rss[name] = rss_mib(stage["pid"])
    return rss


def pipeline(config: Path, port: int, streams: int, frames: int) -> dict:
    """Run the daemon until every stream's last frame is published; figures from what a subscriber saw,
    and each process's memory at each quarter of the run (flat is the target: bounded queues)."""
    arrivals: list[float] = []
    latencies: list[float] = []
    batches: list[int] = []
    received = {f"s{i}": 0 for i in range(streams)}  # offline streams are lossless: all frames arrive
    quarters = [threading.Event() for _ in range(4)]  # the last one: every stream's last frame is in
    connected = threading.Event()

    def listen() -> None:
        messages = subscribe(f"tcp://127.0.0.1:{port}", ["det."], timeout_s=600)
        connected.set()  # the generator connects on first use; a late connect only loses warm-up frames
        for _, message in messages:
            arrivals.append(time.perf_counter())
            latencies.append(message["latency_ms"])
            batches.append(message["batch_size"])
            received[message["stream"]] += 1
            for i, quarter in enumerate(quarters[:3]):
                if sum(received.values()) >= streams * frames * (i + 1) / 4:
                    quarter.set()
            if min(received.values()) >= frames:
                break
        for quarter in quarters:
            quarter.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    connected.wait(10)
    log = config.with_suffix(".log")
    daemon = start_daemon(config, log)
    try:
        rss = [stage_rss_mib(daemon.pid, port + 1) for quarter in quarters if quarter.wait(600)]
        if len(rss) < 4 or min(received.values()) < frames:
            raise RuntimeError(f"pipeline did not finish: frames received per stream {received}")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    if daemon.returncode:
        raise RuntimeError(f"daemon exited {daemon.returncode}:\n{log.read_text()[-2000:]}")
    latencies.sort()
    return {
        "rss": {name: [sample.get(name, float("nan")) for sample in rss] for name in sorted(rss[-1])},
        "fps": (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]),
        "frames": len(arrivals),
        "latency_p50": latencies[len(latencies) // 2],
        "latency_p99": latencies[int(len(latencies) * 0.99)],
        "batch": statistics.mean(batches),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=SITE_FOOTAGE if SITE_FOOTAGE.is_file() else None)
    parser.add_argument("--weights", type=Path, default=BUNDLED_WEIGHTS)
    parser.add_argument("--frames", type=int, default=300, help="frames of the clip per stream")
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--img", type=int, default=640)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--preprocess-workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=5590, help="publish port; the HTTP server takes the next one")
    parser.add_argument(
        "--compare-processors", action="store_true", help="run the pipeline again without tracking, PPE and zones"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vwbench-") as tmp:
        work = Path(tmp)
        source = args.video or demo_clip(work / "demo")
        clip = cut_clip(source, args.frames, work / "clip.mp4")
        weights = args.weights
        detector = load_detector(weights, args.device, args.img)

        decode_fps, images = decode_only(clip)
        infer_fps = inference_only(detector, images, args.max_batch)
        naive_fps = naive_loop(detector, clip, work / "naive")
        del detector, images  # the daemon's inference process gets the device to itself
        config = daemon_config(work, clip, weights, args, args.port, ["people", "zones"])
        result = pipeline(config, args.port, args.streams, args.frames)
        bare = None
        if args.compare_processors:  # the same run without tracking, PPE and zones
            config = daemon_config(work, clip, weights, args, args.port, [])
            bare = pipeline(config, args.port, args.streams, args.frames)

    print(
        f"device: {device_name(resolve_device(args.device))}; weights: {weights.name}; "
        f"clip: {source.name}, {args.frames} frames; img {args.img}; max_batch {args.max_batch}; "
        f"{args.streams} offline streams; {os.cpu_count()} CPUs"
    )
    print("| path | frames/s | pipeline / this |")
    print("|---|---:|---:|")
    rows = [("decode only (1 stream)", decode_fps), ("inference only (batched)", infer_fps)]
    rows += [("naive loop (1 process)", naive_fps), (f"pipeline ({args.streams} streams)", result["fps"])]
    if bare:
        rows.append((f"pipeline ({args.streams} streams) without processors", bare["fps"]))
    for name, fps in rows:
        print(f"| {name} | {fps:.1f} | {result['fps'] / fps:.2f} |")
    print(
        f"pipeline: {result['frames']} frames published, mean batch {result['batch']:.1f}, "
        f"capture->publish latency p50 {result['latency_p50']:.0f} ms, p99 {result['latency_p99']:.0f} ms "
        "(offline streams queue by design; live latency: tests/system/test_backpressure.py)"
    )
    print("| process | RSS (MiB) at 1/4 of the frames | 2/4 | 3/4 | the end |")
    print("|---|---:|---:|---:|---:|")
    for name, samples in result["rss"].items():
        print(f"| {name} | " + " | ".join(f"{mib:.0f}" for mib in samples) + " |")


if __name__ == "__main__":
    main()
