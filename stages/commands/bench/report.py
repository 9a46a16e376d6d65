"""What ``vestwatch bench`` prints: the setup and ceilings, a row per run, where CPU and memory go."""

from __future__ import annotations

import itertools
import os
from typing import Any

from stages.commands.bench.ceilings import Ceilings
from stages.commands.bench.runs import Run

FIGURES = ("cpu_percent", "rss_mib", "pss_mib", "ring_pss_mib")  # per process, summed per stage kind


def describe(args: Any, ceilings: Ceilings) -> str:
    from stages.detector.backends import resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda":
        import torch

        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({os.cpu_count()} cores)"
    cams = ceilings.cameras(args.fps, args.detect_fps)
    return (
        f"device: {name}; {os.cpu_count()} CPUs; cameras {args.size[0]}x{args.size[1]} at {args.fps:g} fps over "
        f"{'RTSP' if args.rtsp else 'real-time files'}, detection at {args.detect_fps:g} fps, "
        f"img {args.img_size}, max_batch {args.max_batch}, {args.preprocess_workers} preprocess workers, "
        f"{args.cameras_per_process} camera(s) per capture/stream process, "
        f"recording {'off' if args.no_record else args.recording}\n"
        f"ceilings: decode-only {ceilings.decode_fps:.0f} frames/s ({ceilings.decoders} decoders on "
        f"{ceilings.decoded_on}: "
        f"{ceilings.decode_fps / args.fps:.1f} cameras), inference-only {ceilings.inference_fps:.0f} frames/s "
        f"(batch {ceilings.batch}: {ceilings.inference_fps / args.detect_fps:.1f} cameras): at most {cams:.1f} cameras"
    )


TABLE_HEAD = (
    "| cameras | frames in/s per camera | detections/s | per camera min-max | dropped | not recorded | undrawn "
    "| p50 ms | p99 ms | vs ceiling | CPU % daemon (machine) | RSS MiB | GPU % | restarts | holds | limiting |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
)


def row(run: Run, args: Any) -> str:
    cpu = sum(u.cpu_percent for u in run.processes.values())
    rss = sum(u.rss_mib for u in run.processes.values())
    gpu = "" if run.gpu_util_percent is None else f"{run.gpu_util_percent:.0f}"
    captured = run.frames_in if args.no_record else run.recorded + run.record_dropped
    fewest, most = run.detections_per_camera
    return (
        f"| {run.cameras} | {captured / run.seconds / run.cameras:.1f} | {run.processed / run.seconds:.1f} "
        f"| {fewest:.1f}-{most:.1f} | {100 * run.drop_fraction:.2f} % | {100 * run.record_drop_fraction:.2f} % "
        f"| {100 * run.undrawn / max(run.recorded, 1):.0f} % "
        f"| {run.latency_p50_ms:.0f} | {run.latency_p99_ms:.0f} | {run.pipeline_vs_ceiling:.2f} "
        f"| {cpu:.0f} ({run.machine_cpu_percent:.0f}) | {rss:.0f} | {gpu} | {run.restarts} "
        f"| {'yes' if run.holds else 'no'} | {run.limiting} |"
    )


def usage_table(runs: list[dict[str, Any]]) -> str:
    """CPU and memory per stage kind, per run: where the cores and the memory go. RSS counts the
    pages processes share in each of them; PSS shares them out, so PSS adds up to what is used.
    The cost of one more camera is the difference between runs with different camera counts,
    given with and without the frame rings (their size is set by pipeline.ring_slots)."""
    kinds = sorted({kind for run in runs for kind in run["kinds"]})
    head = " | ".join(f"{kind} CPU % / RSS / PSS MiB" for kind in kinds)
    lines = [f"\n| cameras | {head} | PSS MiB in all | of it rings |", "|---:|" + "---:|" * (len(kinds) + 2)]
    for run in runs:
        used = run["kinds"]
        cells = [" / ".join(f"{used[k][figure]:.0f}" for figure in FIGURES[:3]) if k in used else "" for k in kinds]
        lines.append(f"| {run['cameras']} | " + " | ".join(cells) + f" | {_total(run, 'pss_mib'):.0f} "
                     f"| {_total(run, 'ring_pss_mib'):.0f} |")  # fmt: skip
    for fewer, more in itertools.pairwise(sorted(runs, key=lambda run: run["cameras"])):
        if more["cameras"] > fewer["cameras"]:
            extra = more["cameras"] - fewer["cameras"]
            pss, rss, rings = (
                (_total(more, f) - _total(fewer, f)) / extra for f in ("pss_mib", "rss_mib", "ring_pss_mib")
            )
            lines.append(f"from {fewer['cameras']} to {more['cameras']} cameras, per additional camera: {pss:.0f} MiB "
                         f"PSS, {pss - rings:.0f} without the frame rings ({rss:.0f} MiB RSS)")  # fmt: skip
    return "\n".join(lines)


def _total(run: dict[str, Any], figure: str) -> float:
    return sum(kind[figure] for kind in run["kinds"].values())
