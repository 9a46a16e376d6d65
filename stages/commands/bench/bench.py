"""``vestwatch bench``: does this machine hold N cameras, and how many can it hold?

One run starts N live cameras (``media``), runs the real daemon on them with a config of its
own (recording on, unless ``--no-record``), waits until every camera's detections flow, then
measures for ``--duration`` seconds: frames in, processed and dropped per camera, the
capture-to-publish latency of every ``det`` message, each process's CPU and memory, and the
GPU's use on CUDA. Before the runs, the same machine measures its two limits on the same
clip: decoding alone (capture's work, one decoder per core) and the detector alone.

A run *holds* when under 1 % of the frames are dropped (for detection and for recording) and
the p99 latency is under the target. ``--find-max`` doubles N until a run fails, then bisects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from pipeline.stage import process_name
from pipeline.subscriber import subscribe
from stages.commands.bench.ceilings import Ceilings, measure_ceilings
from stages.commands.bench.media import RtspCameras, camera_clip, default_source, rtsp_available
from stages.commands.bench.processes import Sampler, Usage, parent_pid
from stages.commands.bench.report import FIGURES, TABLE_HEAD, describe, row, usage_table
from stages.commands.bench.runs import Run
from stages.stats import CaptureStats, InferenceStats, StreamFigures, StreamStats, read_plugin_stats, read_stats
from stages.stream.outputs.recorder import RecorderSink, RecorderStats

log = logging.getLogger(__name__)

DROPS_HELD = 0.01  # under 1 % of the frames dropped
READY_TIMEOUT_S = 180.0  # model loading and every camera's first detection


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(work: Path, urls: list[str], args: Any, publish: int, http: int) -> Path:
    lines = [
        f"recordings_dir = {json.dumps(str(work / 'recordings'))}",
        f"runtime_dir = {json.dumps(str(work / 'run'))}",
        f'publish = "pub+bind:tcp://127.0.0.1:{publish}"',
        f'http = "127.0.0.1:{http}"',
        "[detector]",
        f"weights = {json.dumps(str(args.weights))}",
        f"device = {json.dumps(args.device)}",
        f"img_size = {args.img_size}",
        "[pipeline]",
        f"max_batch = {args.max_batch}",
        f"preprocess_workers = {args.preprocess_workers}",
        f"cameras_per_process = {args.cameras_per_process}",
        f"max_frame_pixels = {max(args.size[0] * args.size[1], 64 * 64)}",
        "[recording]",
        f'video = "{args.recording}"',
    ]
    for k, url in enumerate(urls):
        lines += ["[[streams]]", f'id = "cam{k}"', f"url = {json.dumps(url)}", "realtime = true"]
        lines += [f"record = {'false' if args.no_record else 'true'}", f"detect_fps = {args.detect_fps}"]
        lines += ["loop = true"] if not url.startswith("rtsp://") else []
    config = work / "bench.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def processes(stages: dict[str, dict]) -> dict[str, int]:
    """The daemon's stage processes from its status, by process name: stages that share a process
    (``pipeline.cameras_per_process``) are one, counted once."""
    members: dict[int, list[str]] = {}
    for name, stage in stages.items():
        if stage["pid"]:
            members.setdefault(stage["pid"], []).append(name)
    return {process_name(names): pid for pid, names in members.items()}


class Latencies(threading.Thread):
    """Every ``det`` message's capture-to-publish latency while ``measuring`` is set."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.measuring, self.stopped = endpoint, threading.Event(), threading.Event()
        self.values: list[float] = []
        self.start()

    def run(self) -> None:
        while not self.stopped.is_set():  # a quiet spell (the daemon starting) ends a subscription: resubscribe
            for _, message in subscribe(self.endpoint, ["det."], timeout_s=2.0):
                if self.stopped.is_set():
                    return
                if self.measuring.is_set():
                    self.values.append(message["latency_ms"])


def status(http: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/status.json", timeout=10) as reply:
        return json.load(reply)


def reported(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    """What stage ``name`` last reported in the daemon's status; nothing before it has."""
    return snapshot["stages"].get(name, {}).get("stats", {})


def inferred(snapshot: dict[str, Any]) -> dict[str, StreamFigures]:
    """Inference's figures per stream."""
    return cast(InferenceStats, read_stats("inference", reported(snapshot, "inference"))).streams


def wait_until_flowing(http: int, cameras: int, daemon: subprocess.Popen, log_path: Path) -> None:
    """Until every camera has published detections; a daemon that exits says why."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited {daemon.returncode}:\n{log_path.read_text()[-2000:]}")
        with contextlib.suppress(OSError, ValueError):
            streams = inferred(status(http))
            if sum(figures.published > 0 for figures in streams.values()) >= cameras:
                return
        time.sleep(0.5)
    raise RuntimeError(
        f"not every camera had detections within {READY_TIMEOUT_S:.0f} s:\n{log_path.read_text()[-2000:]}"
    )


def counters(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per camera, the cumulative figures a run is measured by."""
    streams = inferred(snapshot)
    found = {}
    for name in snapshot["stages"]:
        if not name.startswith("capture."):
            continue
        camera = name.partition(".")[2]
        capture = cast(CaptureStats, read_stats("capture", reported(snapshot, name)))
        stream = reported(snapshot, f"stream.{camera}")
        missed = cast(StreamStats, read_stats("stream", stream)).missed
        recorder = read_plugin_stats(RecorderSink.prefix, RecorderStats, stream) or RecorderStats()
        figures = streams.get(camera, StreamFigures())
        found[camera] = {
            "in": capture.frames + capture.dropped,
            "processed": figures.published,
            "drops": {"capture": capture.dropped}
            | {stage: n for stage, n in figures.dropped.items() if stage != "capture"},
            "recorded": recorder.frames,
            "record_dropped": capture.record_dropped + missed,
            "undrawn": recorder.undrawn,
        }
    return found


def start_daemon(config: Path, log_path: Path) -> subprocess.Popen:
    """``vestwatch run -c config`` in its own session, its output to ``log_path``."""
    with log_path.open("w") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run", "-c", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def run_cameras(count: int, args: Any, clip: Path, ceilings: Ceilings) -> Run:
    """The daemon on ``count`` live cameras, measured for ``args.duration`` seconds after warming up."""
    with tempfile.TemporaryDirectory(prefix="vestwatch-bench-") as folder:
        work = Path(folder)
        cameras = RtspCameras(clip, count, free_port()) if args.rtsp else None
        urls = cameras.urls if cameras else [str(clip)] * count
        publish, http = free_port(), free_port()
        config = write_config(work, urls, args, publish, http)
        log_path = work / "daemon.log"
        daemon = start_daemon(config, log_path)
        latencies = Latencies(f"tcp://127.0.0.1:{publish}")
        try:
            wait_until_flowing(http, count, daemon, log_path)
            time.sleep(args.warmup)  # queues and rates settle: a measurement choice, not synchronisation
            before = status(http)
            pids = processes(before["stages"])
            forkservers = {parent_pid(pid) for pid in pids.values()} - {daemon.pid, None}
            if forkservers:  # it holds the pages the forked stages share
                pids["forkserver"] = forkservers.pop()
            sampler = Sampler({"supervisor": daemon.pid, **pids}, str(work / "run"))
            sampler.start()
            latencies.measuring.set()
            began = time.monotonic()
            time.sleep(args.duration)
            after = status(http)
            latencies.measuring.clear()
            seconds = time.monotonic() - began
            usage = sampler.stop()
        finally:
            latencies.stopped.set()
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait(10)
            if cameras:
                cameras.close()
    run = summarise(count, seconds, counters(before), counters(after), usage, sampler, latencies.values, args, ceilings)
    run.restarts = restarts(after) - restarts(before)
    run.holds = run.holds and run.restarts == 0
    return run


def restarts(snapshot: dict[str, Any]) -> int:
    """Stage processes the supervisor has restarted so far, all stages."""
    return sum(stage["restarts"] for stage in snapshot["stages"].values())


def summarise(
    count: int,
    seconds: float,
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    usage: dict[str, Usage],
    sampler: Sampler,
    latencies: list[float],
    args: Any,
    ceilings: Ceilings,
) -> Run:
    per_camera, drops = {}, {}
    counted = ("in", "processed", "recorded", "record_dropped", "undrawn")
    for camera, now in after.items():
        then = before.get(camera, {"drops": {}} | dict.fromkeys(counted, 0))
        dropped = {stage: n - then["drops"].get(stage, 0) for stage, n in now["drops"].items()}
        for stage, n in dropped.items():
            drops[stage] = drops.get(stage, 0) + n
        per_camera[camera] = {key: now[key] - then[key] for key in counted}
        per_camera[camera]["dropped"] = sum(dropped.values())
    total = {key: sum(c[key] for c in per_camera.values()) for key in next(iter(per_camera.values()), {})}
    latencies = sorted(latencies) or [float("nan")]
    kinds: dict[str, dict[str, float]] = {}
    for name, used in usage.items():
        kind = kinds.setdefault(name.partition(".")[0], dict.fromkeys(("processes", *FIGURES), 0))
        kind["processes"] += 1
        for figure in FIGURES:
            kind[figure] = round(kind[figure] + getattr(used, figure), 1)
    gpu_util = round(statistics.mean(sampler.gpu_util), 1) if sampler.gpu_util else None
    gpu_mib = max(sampler.gpu_mib) if sampler.gpu_mib else None
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    run = Run(
        cameras=count,
        seconds=round(seconds, 2),
        frames_in=total.get("in", 0),
        processed=total.get("processed", 0),
        dropped=total.get("dropped", 0),
        recorded=total.get("recorded", 0),
        record_dropped=total.get("record_dropped", 0),
        undrawn=total.get("undrawn", 0),
        latency_p50_ms=round(latencies[len(latencies) // 2], 1),
        latency_p99_ms=round(p99, 1),
        per_camera=per_camera,
        processes=usage,
        kinds=kinds,
        gpu_util_percent=gpu_util,
        gpu_memory_mib=gpu_mib,
        limiting=limiting(usage, kinds, gpu_util, drops, sampler.machine_cpu_percent),
        machine_cpu_percent=sampler.machine_cpu_percent,
        holds=False,
        pipeline_vs_ceiling=round(
            total.get("processed", 0) / seconds / ceilings.detections_per_s(args.fps, args.detect_fps), 3
        ),
        drops=drops,
    )
    run.holds = run.drop_fraction < DROPS_HELD and run.record_drop_fraction < DROPS_HELD and p99 < args.latency_ms
    return run


def limiting(
    usage: dict[str, Usage], kinds: dict[str, dict[str, float]], gpu: float | None, drops: dict, machine: float
) -> str:
    """Which stage saturates first, as far as the figures tell: the machine's CPU when nearly all
    of it is busy, else the GPU when nearly all of it is, else the busiest single process."""
    cores = os.cpu_count() or 1
    heaviest = max(kinds, key=lambda kind: kinds[kind]["cpu_percent"], default="?")
    busiest = max(usage, key=lambda name: usage[name].cpu_percent, default="?")
    where = f"; drops at {', '.join(f'{s} {n}' for s, n in drops.items() if n)}" if any(drops.values()) else ""
    if machine >= 90:
        return f"CPU: {machine:.0f} % of {cores} cores busy, most in {heaviest}{where}"
    if gpu is not None and gpu >= 90:
        return f"GPU: {gpu:.0f} % busy (inference){where}"
    return f"none saturated; busiest process {busiest} at {usage[busiest].cpu_percent:.0f} % of a core{where}"


def find_max(args: Any, clip: Path, ceilings: Ceilings, report: Any) -> tuple[int, list[Run]]:
    """Double the cameras until a run fails, then bisect: the most cameras a run held with. A run
    that cannot even start (no detections in time, the daemon gone) fails like one that drops."""
    runs, held, failed, count = [], 0, None, 1
    while failed is None or failed - held > max(1, held // 10):
        try:
            run = run_cameras(count, args, clip, ceilings)
        except (RuntimeError, OSError) as error:
            print(f"| {count} | did not run: {str(error).splitlines()[0]} |", flush=True)
            run = None
        if run is not None:
            runs.append(run)
            report(run)
        if run is not None and run.holds:
            held = count
            if count >= args.max_streams:
                break
        else:
            failed = count
        count = min(count * 2, args.max_streams) if failed is None else (held + failed) // 2
        if failed is not None and count <= held:
            break
    return held, runs


def prepare(args: Any) -> Path:
    # each RTSP camera plays it once from its connection on: long enough for the slowest start too
    seconds = READY_TIMEOUT_S + args.warmup + args.duration + 30
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vestwatch" / "bench"
    source = args.video or default_source(cache / "demo")
    log.info("bench: preparing a %dx%d %g fps camera clip from %s", *args.size, args.fps, source)
    return camera_clip(source, args.size, args.fps, seconds if args.rtsp else 30, cache)


def bench(args: Any) -> dict[str, Any]:
    """Everything ``vestwatch bench`` measures, printed as it comes and returned for ``--json``."""
    args.rtsp = rtsp_available() if args.source == "auto" else args.source == "rtsp"
    clip = prepare(args)
    counts = args.streams
    decoders = min(os.cpu_count() or 1, max([*counts, 1]) if not args.find_max else os.cpu_count() or 1)
    ceilings = measure_ceilings(args, clip, decoders)
    print(describe(args, ceilings), flush=True)
    print(TABLE_HEAD, flush=True)
    result: dict[str, Any] = {"setup": vars_of(args), "ceilings": asdict(ceilings), "runs": []}

    def report(run: Run) -> None:
        print(row(run, args), flush=True)
        result["runs"].append({**asdict(run), "drop_fraction": run.drop_fraction})
        if args.json:  # kept run by run: a long --find-max that is stopped keeps what it measured
            args.json.write_text(json.dumps(result, indent=1))

    if args.find_max:
        most, _ = find_max(args, clip, ceilings, report)
        result["max_cameras"] = most
        print(f"\nmost cameras held: {most} (< 1 % drops, p99 < {args.latency_ms:g} ms)")
    else:
        for count in counts:
            report(run_cameras(count, args, clip, ceilings))
    print(usage_table(result["runs"]))
    return result


def vars_of(args: Any) -> dict[str, Any]:
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items() if key != "run"}
