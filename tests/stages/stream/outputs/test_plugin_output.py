"""A new output is one module and one entry point: ``tests/stages/stream/outputs/tally.py``, registered
here as an installed package would register it (a ``.dist-info`` folder on the path), gets its own
config section, frames and events, and reports figures that ``ctl status`` and ``/metrics`` show,
with no other file of vestwatch edited."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.detections import Detections
from pipeline.settings import ConfigError, load_settings
from stages.config import REPO_ROOT, Settings, installed_plugins
from stages.stream import plugins
from stages.stream.analysis import FrameAnalysis, Person, Violation
from stages.stream.stage import StreamStage
from stages.web.observe import metrics
from tests.conftest import SHIPPED
from tests.harness import collect, wait_status
from tests.stages.stream.outputs.tally import TallySettings, TallySink


def forget_plugins() -> None:
    installed_plugins.cache_clear()


@pytest.fixture
def registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``tally`` installed for this test: in this process, and in the daemon's (by PYTHONPATH)."""
    site = tmp_path / "site"
    info = site / "vestwatch_tally-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vestwatch-tally\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{plugins.SINKS}]\ntally = {TallySink.__module__}:TallySink\n")
    path = [str(site), str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
    sys.path.insert(0, str(site))
    forget_plugins()
    yield site
    sys.path.remove(str(site))
    forget_plugins()


def config(tmp_path: Path, tally: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(
        f'runtime_dir = "{tmp_path / "run"}"\nrecordings_dir = "{tmp_path / "rec"}"\n'
        '[[streams]]\nid = "cam"\nurl = "demo"\nsinks = ["live", "snapshots", "tally"]\n'
        f"{tally}"
    )
    return path


def test_its_section_is_validated_by_its_own_model(registered: Path, tmp_path: Path) -> None:
    out = tmp_path / "tally.jsonl"
    settings = load_settings(Settings, config(tmp_path, f'[tally]\nout = "{out}"\nlabel = "site-a"\n'))
    assert settings.plugin_section("tally") == TallySettings(out=out, label="site-a")
    with pytest.raises(ConfigError, match=r"tally\.every: Input should be greater than 0"):
        load_settings(Settings, config(tmp_path, f'[tally]\nout = "{out}"\nevery = 0\n'))
    with pytest.raises(ConfigError, match=r"tallies: Extra inputs are not permitted"):
        load_settings(Settings, config(tmp_path, '[tallies]\nout = "x"\n'))  # not a plug-in's: refused as ever


def test_the_stream_stage_hands_it_frames_and_events_and_reports_its_figures(
    registered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "tally.jsonl"
    (tmp_path / "run").mkdir()
    monkeypatch.setenv("VWSTAGE_PUBLISH", f"pub+bind:ipc://{tmp_path}/run/pub.ipc")
    stage = StreamStage("stream.cam", config(tmp_path, f'[tally]\nout = "{out}"\nlabel = "site-a"\n'), None)
    stage.setup()
    try:
        (tally,) = [sink for sink in stage.sinks if isinstance(sink, TallySink)]
        for seq in (1, 2):
            analysis = FrameAnalysis("cam", seq, 100.0 + seq, None, 8, 8, Detections([], [], []), [])
            analysis.people = [Person(3, [1.0, 2.0, 3.0, 4.0], 0.9)]
            analysis.violations = [Violation("cam-1-3-site", "start", 3, ["site"], ["vest"], ["vest"], 99.0, None, 1.0)]
            stage._events_out(np.zeros((8, 8, 3), np.uint8), analysis, published=None)
        figures = stage.report()
    finally:
        stage.teardown()
    assert tally.stats.frames == 2 and figures["tally_frames"] == 2 and figures["tally_events"] == 2
    (line, _) = [json.loads(text) for text in out.read_text().splitlines()]
    assert line["label"] == "site-a" and line["event_id"] == "cam-1-3-site" and line["box"] == [1.0, 2.0, 3.0, 4.0]
    assert line["snapshot_url"].endswith("/api/events/cam-1-3-site/snapshot.jpg"), "with the other sinks' evidence"

    status = {"stages": {"stream.cam": {"pid": 1, "restarts": 0, "stats": figures}}}
    exported = {
        (sample.name, sample.labels["stream"]): sample.value
        for family in text_string_to_metric_families(metrics(status)[2].decode())
        for sample in family.samples
        if "stream" in sample.labels
    }
    assert exported[("vestwatch_tally_frames_total", "cam")] == 2
    assert exported[("vestwatch_tally_events_total", "cam")] == 2
    assert exported[("vestwatch_tally_every", "cam")] == 1, "an undeclared figure, by its default name"


def test_the_daemon_runs_it_and_shows_its_figures(registered: Path, daemon, site_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "tally.jsonl"
    stream = {"id": "yard", "url": str(site_clip), "realtime": False, "loop": True, "record": False}
    stream["sinks"] = ["snapshots", "eventlog", "tally"]
    vestwatch = daemon([stream], detector=SHIPPED, events={"dwell_s": 0.5}, tally={"out": str(out), "label": "site-a"})
    vestwatch.wait_ready()
    events = collect(
        vestwatch.endpoint,
        lambda m: any(e["phase"] == "start" for e in m.get("yard", [])),
        timeout=60,
        topics=("event.",),
    )
    start = next(e for e in events["yard"] if e["phase"] == "start")
    wait_status(vestwatch, lambda s: s["stages"]["stream.yard"]["stats"]["tally_events"] >= 1)
    with urllib.request.urlopen(f"http://{vestwatch.http}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'vestwatch_tally_frames_total{stream="yard"}' in text and "vestwatch_tally_events_total" in text
    assert vestwatch.stop()[0] == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    mine = next(line for line in lines if (line["event_id"], line["phase"]) == (start["event_id"], "start"))
    assert mine.pop("label") == "site-a"
    assert mine == {key: value for key, value in start.items() if key not in ("v", "type")}, "the published event"
