"""The benchmarks still run end to end and print every figure (their numbers go to bench/RESULTS.md)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.harness import free_port

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_bench(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def table_rows(output: str) -> list[tuple[str, list[float]]]:
    """Markdown table rows with figures: (first cell, the numeric cells)."""
    rows = []
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and len(cells) > 1 and re.fullmatch(r"[\d.]+", cells[-1]):
            rows.append((cells[0], [float(c) for c in cells[1:] if re.fullmatch(r"[\d.]+", c)]))
    return rows


def test_pipeline_benchmark_measures_every_path_and_process(make_video) -> None:
    clip = make_video("bench.mp4", seconds=2, fps=10, size="320x240")
    port = free_port()
    output = run_bench(
        "pipeline_throughput.py",
        "--video",
        str(clip),
        "--frames",
        "20",
        "--img",
        "160",
        "--port",
        str(port),
        "--compare-processors",
    )
    rows = dict(table_rows(output))
    for path in (
        "decode only (1 stream)",
        "inference only (batched)",
        "naive loop (1 process)",
        "pipeline (2 streams)",
        "pipeline (2 streams) without processors",
    ):
        assert rows[path][0] > 0, f"{path}: {rows.get(path)}"
    assert rows["pipeline (2 streams)"][1] == 1.0
    assert "40 frames published" in output
    for process in ("supervisor", "capture.s0", "capture.s1", "preprocess.0", "inference", "stream.s1"):
        assert len(rows[process]) == 4 and min(rows[process]) > 0, process


def test_detector_benchmark_prints_its_table() -> None:
    output = run_bench(
        "detector_throughput.py", "--device", "cpu", "--size", "160", "--cfgs", "yolov7-tiny", "--batches", "1", "2",
        "--iters", "1", "--warmup", "0",
    )  # fmt: skip
    rows = table_rows(output)
    assert "device: CPU" in output
    assert [(model, figures[0]) for model, figures in rows] == [("yolov7-tiny", 1), ("yolov7-tiny", 2)]
    assert all(figures[2] > 0 for _, figures in rows)


def test_train_loader_benchmark_measures_disk_and_cache(boxes_dataset) -> None:
    output = run_bench(
        "train_loader.py", "--data", str(boxes_dataset), "--data-root", str(boxes_dataset), "--img", "128",
        "--batch", "4", "--workers", "0", "1", "--epochs", "1",
    )  # fmt: skip
    rows = table_rows(output)
    assert [(name, figures[0]) for name, figures in rows] == [
        ("disk (JPEG decode)", 0), ("disk (JPEG decode)", 1), ("RAM cache", 0), ("RAM cache", 1),
    ]  # fmt: skip
    assert all(figures[1] > 0 for _, figures in rows)


def test_stream_stage_benchmark_times_every_plugin_at_each_size() -> None:
    output = run_bench("stream_stage.py", "--frames", "4")
    rows = dict(table_rows(output))
    assert set(rows) == {"640x360", "720p", "1080p"}
    header = next(line for line in output.splitlines() if line.startswith("| frame |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")][1:]  # a plug-in each, then "all"
    assert {"PeopleProcessor", "ZonesProcessor", "RecorderSink", "ClipSink", "EventLogSink"} <= set(columns)
    for figures in rows.values():  # ms per frame; zones can round to 0.00
        by_plugin = dict(zip(columns, figures, strict=True))
        people, recorder = by_plugin["PeopleProcessor"], by_plugin["RecorderSink"]
        assert people > 0 and recorder > 0 and by_plugin["all"] >= people + recorder - 0.02, figures


def test_vestwatch_bench_runs_the_daemon_on_live_cameras_and_reports_each_figure(make_video, tmp_path: Path) -> None:
    """A smoke run on this CPU: two small cameras (over RTSP where the GStreamer server is installed,
    as deploy/setup.sh --dev does), a few seconds measured; every figure there and plausible."""
    clip = make_video("site.mp4", seconds=2, fps=10, size="320x240")
    figures = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "bench", "--streams", "2", "--resolution", "320x180", "--fps", "10",
         "--duration", "4", "--warmup", "1", "--img-size", "160", "--video", str(clip), "--json", str(figures)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(figures.read_text())
    assert report["ceilings"]["decode_fps"] > 10 and report["ceilings"]["inference_fps"] > 0
    (run,) = report["runs"]
    assert run["cameras"] == 2 and sorted(run["per_camera"]) == ["cam0", "cam1"]
    for camera in run["per_camera"].values():
        # 10 fps for about 4 s: real time, neither faster nor starved
        assert 25 <= camera["in"] <= 55 and camera["processed"] > 0 and camera["recorded"] > 0, camera
    assert 0 < run["latency_p50_ms"] <= run["latency_p99_ms"] and run["restarts"] == 0
    for process in ("supervisor", "capture.cam0", "capture.cam1", "preprocess.0", "inference", "stream.cam1"):
        assert run["processes"][process]["rss_mib"] > 10, process
    capture = run["processes"]["capture.cam0"]
    assert 0 < capture["ring_pss_mib"] < capture["pss_mib"] <= capture["rss_mib"], capture  # its ring is shared
    assert run["kinds"]["inference"]["cpu_percent"] > 0 and run["limiting"]
    assert "| 2 |" in result.stdout and "ceilings: decode-only" in result.stdout
