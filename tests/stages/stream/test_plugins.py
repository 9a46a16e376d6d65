"""Plug-ins by name, the hooks the stream stage calls on them, and what a failing one does to it."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.detections import Detections
from pipeline.messages import topic
from stages.config import PipelineSettings, StreamSettings, installed_plugins
from stages.stats import PluginStats, counter
from stages.stream import plugins
from stages.stream.analysis import FrameAnalysis, Person, Violation
from stages.stream.messages import EventMessage, Evidence
from stages.stream.outputs.base import Sink
from stages.stream.processors.base import Processor
from stages.stream.stage import StreamStage


def test_plugins_are_named_by_their_entry_points() -> None:
    assert {"people", "zones"} <= set(installed_plugins(plugins.PROCESSORS))
    assert {"recorder", "live", "snapshots"} <= set(installed_plugins(plugins.SINKS))
    with pytest.raises(ValidationError, match=r"no vestwatch\.sinks entry point named 'recordr'"):
        StreamSettings(id="cam", url="demo", sinks=["recordr"])


def test_each_plugin_is_a_class_on_its_base_in_a_module_of_its_own() -> None:
    for group, base in ((plugins.PROCESSORS, Processor), (plugins.SINKS, Sink)):
        found = [entry for entry in entry_points(group=group) if entry.module.startswith("stages.")]
        assert len({entry.module for entry in found}) == len(found), "one module each"
        for entry in found:
            assert issubclass(entry.load(), base), entry


def test_a_plugin_listed_twice_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match=r"'webhooks' is listed twice"):
        StreamSettings(id="cam", url="demo", sinks=["recorder", "webhooks", "webhooks"])


def test_a_sink_needs_no_init_of_its_own_and_an_old_style_factory_is_refused_by_name(monkeypatch) -> None:
    class Quiet(Sink):
        def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
            pass

    stream = StreamSettings(id="cam", url="demo")
    assert isinstance(Quiet.create(None, stream), Quiet)  # type: ignore[arg-type]

    class Entry:  # what an entry point of the 0.1 plug-in contract named: a factory function
        name, value = "old", "somebody.sinks:old"

        @staticmethod
        def load() -> object:
            return lambda settings, stream: Quiet()

    monkeypatch.setattr(plugins, "entry_points", lambda group: [Entry()])
    with pytest.raises(ValueError, match=r"vestwatch\.sinks 'old': somebody\.sinks:old is not a class on Sink"):
        plugins.load(plugins.SINKS, ["old"], None, stream)  # type: ignore[arg-type]


def test_a_stream_records_only_with_a_recorder_sink() -> None:
    assert StreamSettings(id="cam", url="demo").records
    assert not StreamSettings(id="cam", url="demo", sinks=["live"]).records  # capture then sends it nothing
    assert not StreamSettings(id="cam", url="demo", record=False).records


def test_a_host_with_capture_runs_the_stream_stage_too() -> None:
    with pytest.raises(ValidationError, match="a host with capture needs the stream stage"):
        PipelineSettings(stages=["capture", "preprocess", "inference"])


def stage_of(tmp_path: Path, extra: str = "") -> StreamStage:
    config = tmp_path / "c.toml"
    config.write_text(f'runtime_dir = "{tmp_path / "run"}"\nrecordings_dir = "{tmp_path / "rec"}"\n{extra}')
    return StreamStage("stream.demo", config, None)


class Broken(Sink):
    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        raise RuntimeError("a bug in somebody's sink")


def test_a_failing_plugin_is_counted_and_the_stage_goes_on(tmp_path: Path) -> None:
    stage = stage_of(tmp_path)
    analysis = FrameAnalysis("demo", 1, 0.0, None, 8, 8, Detections([], [], []), [])
    broken = Broken()
    stage._guarded(broken, broken.handle, None, analysis)
    stage._guarded(broken, broken.handle, None, analysis)
    assert stage.stats.plugin_errors == 2


@dataclass
class SpyStats(PluginStats):
    calls: int = counter("vestwatch_spy_calls_total", "Hooks called")


class Spy(Sink):
    """Keeps the hooks called on it; adds ``evidence`` to each event."""

    prefix, stats_type = "spy", SpyStats

    def __init__(self, evidence: Evidence) -> None:
        super().__init__()
        self.calls: list[tuple[str, object]] = []
        self.found = evidence

    def evidence(self, frame: np.ndarray | None, analysis: FrameAnalysis, violation: Violation) -> Evidence:
        self.calls.append(("evidence", violation.event_id))
        return self.found

    def handle(self, frame: np.ndarray | None, analysis: FrameAnalysis) -> None:
        self.calls.append(("handle", analysis.seq))

    def events(self, events: tuple[EventMessage, ...]) -> None:
        self.calls.append(("events", events))
        self.stats.calls += 1


class Publisher:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, parts: list[bytes]) -> None:
        self.sent.append(parts)


def test_each_phase_becomes_one_frozen_event_with_every_sinks_evidence(tmp_path: Path) -> None:
    stage = stage_of(tmp_path)
    snapshots, recorder = Spy({"snapshot": "/s.jpg"}), Spy({"segment": "/a.ts", "offset_s": 1.5})
    recorder.every_frame = True
    greedy = Spy({"colour": "red"})  # not a field of an event: counted as an error, adds nothing
    stage.sinks, stage.result_sinks, stage.frame_sinks = [snapshots, recorder, greedy], [snapshots, greedy], [recorder]
    stage.publisher = Publisher()
    analysis = FrameAnalysis("demo", 9, 100.0, None, 8, 8, Detections([], [], []), [])
    analysis.people = [Person(3, [1.0, 2.0, 3.0, 4.0], 0.9)]
    analysis.violations = [Violation("demo-1-3-site", "start", 3, ["site"], ["vest"], ["vest"], 99.0, None, 1.0)]
    stage._events_out(None, analysis, published=None)

    assert [name for name, _ in snapshots.calls] == ["evidence", "handle", "events"]
    assert [name for name, _ in recorder.calls] == ["evidence", "events"], "an every-frame sink gets no inferred frame"
    (event,) = snapshots.calls[-1][1]
    assert recorder.calls[-1][1][0] is event and greedy.calls[-1][1][0] is event, "the same value for every sink"
    assert (event.snapshot, event.segment, event.offset_s, event.box) == ("/s.jpg", "/a.ts", 1.5, [1.0, 2.0, 3.0, 4.0])
    assert event.clip is None and stage.stats.plugin_errors == 1
    with pytest.raises(AttributeError):
        event.snapshot = "/other.jpg"  # type: ignore[misc]
    ((name, payload),) = stage.publisher.sent
    assert name == topic("event", "demo") and EventMessage.decode(payload) == event


def test_figures_are_reported_with_their_prefix_and_for_declined_plugins_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "run").mkdir()
    monkeypatch.setenv("VWSTAGE_PUBLISH", f"pub+bind:ipc://{tmp_path}/run/pub.ipc")  # as the supervisor says
    stage = stage_of(tmp_path)  # no [mqtt], no webhooks: those sinks decline, their figures stay at zero
    stage.setup()
    try:
        assert {type(sink).__name__ for sink in stage.sinks} == {
            "RecorderSink",
            "LiveSink",
            "SnapshotSink",
            "ClipSink",
            "EventLogSink",
            "ComplianceSink",
            "LearningSink",
        }
        figures = stage.report()
        for name in ("frames", "bytes", "segments", "disk_low", "clips", "clips_failed", "missed", "events"):
            assert name in figures, name
        for name in ("compliance_flushes", "compliance_unsaved_s"):
            assert name in figures, name
        assert figures["webhook_failed"] == 0 and figures["mqtt_connected"] is False
        assert {"sent", "failed", "published"}.isdisjoint(figures), "prefixed"
    finally:
        stage.teardown()


def test_two_plugins_may_not_report_a_figure_of_one_name() -> None:
    with pytest.raises(ValueError, match="spy_calls"):
        plugins.check_figures(plugins.Loaded([Spy({})], [Spy]))
    with pytest.raises(ValueError, match="missed"):
        plugins.check_figures(plugins.Loaded([], [type("Missed", (Sink,), {"stats_type": MissedStats})]))


@dataclass
class MissedStats(PluginStats):
    missed: int = 0  # the stage's own figure
