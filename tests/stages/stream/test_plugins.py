"""Plug-ins by name, and what a failing one does to the stream stage."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.detections import Detections
from stages.config import PipelineSettings, StreamSettings, installed_plugins
from stages.stream import plugins
from stages.stream.analysis import FrameAnalysis
from stages.stream.stage import StreamStage


def test_plugins_are_named_by_their_entry_points() -> None:
    assert {"people", "zones"} <= set(installed_plugins(plugins.PROCESSORS))
    assert {"recorder", "live", "snapshots"} <= set(installed_plugins(plugins.SINKS))
    with pytest.raises(ValidationError, match=r"no vestwatch\.sinks entry point named 'recordr'"):
        StreamSettings(id="cam", url="demo", sinks=["recordr"])


def test_a_stream_records_only_with_a_recorder_sink() -> None:
    assert StreamSettings(id="cam", url="demo").records
    assert not StreamSettings(id="cam", url="demo", sinks=["live"]).records  # capture then sends it nothing
    assert not StreamSettings(id="cam", url="demo", record=False).records


def test_a_host_with_capture_runs_the_stream_stage_too() -> None:
    with pytest.raises(ValidationError, match="a host with capture needs the stream stage"):
        PipelineSettings(stages=["capture", "preprocess", "inference"])


class Broken:
    def handle(self, frame: object, analysis: FrameAnalysis) -> None:
        raise RuntimeError("a bug in somebody's sink")

    def close(self) -> None:
        """Nothing to close."""


def test_a_failing_plugin_is_counted_and_the_stage_goes_on(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'runtime_dir = "{tmp_path / "run"}"\nrecordings_dir = "{tmp_path / "rec"}"\n')
    stage = StreamStage("stream.demo", config, None)
    analysis = FrameAnalysis("demo", 1, 0.0, None, 8, 8, Detections([], [], []), [])
    broken = Broken()
    stage._guarded(broken, broken.handle, None, analysis)
    stage._guarded(broken, broken.handle, None, analysis)
    assert stage.stats.plugin_errors == 2
