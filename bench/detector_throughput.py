"""Detector throughput per model and batch size: images/s of the fused model's forward pass.

    python bench/detector_throughput.py                      # auto device, 640, batches 1 8 32
    python bench/detector_throughput.py --device cpu --batches 1 8 --iters 5

On CUDA the model runs in fp16 and channels-last, as the TorchBackend runs it. Weights
are random: throughput does not depend on their values. Prints a Markdown table for
bench/RESULTS.md, with the device named.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from stages.detector.backends import resolve_device
from stages.detector.model import Model


def measure(cfg: str, batch: int, size: int, device: torch.device, iters: int, warmup: int) -> float:
    """Seconds per batch, median of ``iters`` synchronised runs."""
    model = Model(cfg, nc=10).fuse().to(device)
    x = torch.rand(batch, 3, size, size, device=device)
    if device.type == "cuda":
        model = model.half().to(memory_format=torch.channels_last)
        x = x.half().contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--cfgs", nargs="+", default=["yolov7-tiny", "yolov7"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    device = resolve_device(args.device)
    precision = "fp16" if device.type == "cuda" else "fp32"
    print(f"device: {device_name(device)}; torch {torch.__version__}; {args.size}x{args.size}; {precision}")
    print("| model | batch | ms/batch | images/s |")
    print("|---|---:|---:|---:|")
    for cfg in args.cfgs:
        for batch in args.batches:
            seconds = measure(cfg, batch, args.size, device, args.iters, args.warmup)
            print(f"| {cfg} | {batch} | {seconds * 1e3:.1f} | {batch / seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
