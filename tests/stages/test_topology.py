"""Which processes a config asks for, and which of them a change restarts: each stage kind declares
what it reads (``READS``), and these tests hold the declaration to what the stages really read."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from pipeline.endpoints import Endpoint
from pipeline.settings import load_settings
from pipeline.stage import member_names, process_name
from stages.config import Settings, StreamSettings
from stages.topology import DAEMON_READS, READS, plan
from tests.harness import free_port
from tests.stages.stream.outputs.test_plugin_output import registered  # noqa: F401 - a fixture


def settings(per_process: int, zone_on: str | None = None) -> Settings:
    streams = [{"id": f"cam{i}", "url": "demo"} for i in range(5)]
    for stream in streams:
        if stream["id"] == zone_on:
            stream["zones"] = [{"name": "pit", "polygon": [[0, 0], [1, 0], [1, 1]]}]
    return Settings(streams=streams, pipeline={"cameras_per_process": per_process})


def test_cameras_are_grouped_per_process_in_config_order() -> None:
    names = [spec.name for spec in plan(settings(2)).specs]
    assert names == [
        "capture.cam0+cam1", "capture.cam2+cam3", "capture.cam4", "preprocess.0", "preprocess.1", "inference",
        "stream.cam0+cam1", "stream.cam2+cam3", "stream.cam4",
    ]  # fmt: skip
    assert [spec.name for spec in plan(settings(1)).specs][:2] == ["capture.cam0", "capture.cam1"]
    assert member_names("stream.cam2+cam3") == ["stream.cam2", "stream.cam3"]
    assert process_name(["stream.cam2", "stream.cam3"]) == "stream.cam2+cam3" and member_names("inference") == [
        "inference"
    ]


def test_a_change_to_one_camera_restarts_its_group_only() -> None:
    before, after = plan(settings(2)).fingerprints, plan(settings(2, zone_on="cam3")).fingerprints
    changed = sorted(name for name in before if before[name] != after[name])
    assert changed == ["stream.cam2+cam3"], "a zone is none of capture's business, nor of the other groups'"


BASE: dict[str, Any] = {
    "streams": [
        {"id": "a", "url": "demo", "sinks": ["live", "eventlog", "mqtt"]},
        {"id": "b", "url": "demo", "zones": [{"name": "pit"}]},
    ],
    "pipeline": {"preprocess_workers": 1},
}
STREAMS, CAPTURES = {"stream.a", "stream.b"}, {"capture.a", "capture.b"}


def _mqtt(c: dict) -> None:
    c["mqtt"] = {"host": "broker.example"}


def _webhook(c: dict) -> None:
    c["webhooks"] = [{"url": "http://hooks.example/ppe"}]


def _recorder(c: dict) -> None:
    c["streams"][0]["sinks"].append("recorder")


def _no_mqtt(c: dict) -> None:
    c["streams"][0]["sinks"].remove("mqtt")


def _zone(c: dict) -> None:
    c["streams"][1]["zones"][0]["require"] = ["vest", "hardhat"]


def _not_realtime(c: dict) -> None:
    c["streams"][0]["realtime"] = False


EDITS: dict[str, tuple[Callable[[dict], None], set[str]]] = {
    "[mqtt]": (_mqtt, STREAMS),
    "[[webhooks]]": (_webhook, STREAMS),
    "http_url": (lambda c: c.update(http_url="https://site.example:8443"), STREAMS),
    "sinks gain the recorder: both ends of the recording link": (_recorder, {"capture.a", "stream.a"}),
    "sinks lose mqtt: capture records as before": (_no_mqtt, {"stream.a"}),
    "a stream's realtime": (_not_realtime, {"capture.a", "stream.a"}),
    "recording.video: capture copies the camera's packets": (
        lambda c: c.update(recording={"video": "camera"}), CAPTURES | STREAMS
    ),
    "recording.segment_s": (lambda c: c.update(recording={"segment_s": 10}), STREAMS),
    "[detector] img_size": (lambda c: c.update(detector={"img_size": 320}), {"preprocess.0", "inference"}),
    "[detector] max_det": (lambda c: c.update(detector={"max_det": 10}), {"inference"}),
    "[detector] conf, applied live": (lambda c: c.update(detector={"conf": 0.5}), set()),
    "zones": (_zone, {"stream.b"}),
    "[events]": (lambda c: c.update(events={"dwell_s": 1}), STREAMS),
    "site": (lambda c: c.update(site="north-gate"), STREAMS),
    "[pipeline]": (lambda c: c.update(pipeline={"preprocess_workers": 1, "max_batch": 2}), {
        "capture.a", "capture.b", "preprocess.0", "inference", "stream.a", "stream.b"
    }),
}  # fmt: skip


@pytest.mark.parametrize("edit", EDITS, ids=list(EDITS))
def test_a_change_restarts_exactly_the_stages_that_read_it(edit: str) -> None:
    change, expected = EDITS[edit]
    edited = copy.deepcopy(BASE)
    change(edited)
    before, after = plan(Settings(**BASE)), plan(Settings(**edited))
    assert before.specs == after.specs
    assert {name for name in before.fingerprints if before.fingerprints[name] != after.fingerprints[name]} == expected
    assert (before.overrides != after.overrides) == ("conf" in edit)


def test_a_plugin_section_restarts_the_streams_that_list_the_plugin(registered: Path, tmp_path: Path) -> None:  # noqa: F811
    config = copy.deepcopy(BASE)
    config["streams"][1]["sinks"] = ["live", "tally"]
    before = plan(Settings(**config, tally={"out": str(tmp_path / "1.jsonl")}))
    after = plan(Settings(**config, tally={"out": str(tmp_path / "2.jsonl")}))
    assert [name for name in before.fingerprints if before.fingerprints[name] != after.fingerprints[name]] == [
        "stream.b"
    ]


def test_what_the_daemon_holds_is_in_the_plan() -> None:
    moved = {**copy.deepcopy(BASE), "http": "127.0.0.1:9999", "pipeline": {"preprocess_workers": 1, "stall_s": 3}}
    before, after = plan(Settings(**BASE)), plan(Settings(**moved))
    assert sorted(n for n in before.held if before.held[n] != after.held[n]) == ["http", "pipeline.stall_s"]
    assert "runtime_dir" in before.fixed and "http" not in before.fixed


def _resolves(model: type[BaseModel], path: str) -> bool:
    head, _, rest = path.partition(".")
    field = model.model_fields.get(head)
    if field is None:
        return not rest and isinstance(inspect.getattr_static(model, head, None), property)
    inner = field.annotation
    return not rest or (isinstance(inner, type) and issubclass(inner, BaseModel) and _resolves(inner, rest))


def test_every_setting_is_read_by_a_stage_kind_or_the_daemon() -> None:
    """A new field must say who reads it, or a reload would ignore it; a declared name must exist."""
    declared = {path for reads in READS.values() for path in reads.settings | reads.live} | DAEMON_READS
    assert not [path for path in declared if not _resolves(Settings, path)]
    assert not [f for reads in READS.values() for f in reads.stream if not _resolves(StreamSettings, f)]
    tops = {path.partition(".")[0] for path in declared} | {"streams"}
    assert set(Settings.model_fields) - tops == set()
    streamed = {field for reads in READS.values() for field in reads.stream}
    assert set(StreamSettings.model_fields) - streamed == set()


class Watched:
    """A config model whose reads are logged as paths from the top (``recording.video``, ``streams.url``):
    of a field, or of a property as itself. Its own methods run on the watched copy, so that what they
    read is logged; anything of pydantic's (``model_dump``) reads the whole model."""

    def __init__(self, target: BaseModel, log: set[str], path: str = "") -> None:
        self._target, self._log, self._path = target, log, path

    def __getattr__(self, name: str) -> Any:
        target, where = self._target, self._path + name
        found = inspect.getattr_static(type(target), name, None)
        if name in type(target).model_fields:
            value = getattr(target, name)
            if isinstance(value, BaseModel):
                return Watched(value, self._log, where + ".")
            if where == "streams":  # how a stage finds its own: what it reads of each is logged
                return [Watched(stream, self._log, "streams.") for stream in value]
            self._log.add(where)
            return value
        if isinstance(found, property) and not hasattr(BaseModel, name):
            self._log.add(where)
            return getattr(target, name)
        if inspect.isfunction(found) and not hasattr(BaseModel, name):
            return found.__get__(self)
        if name == "_plugin_sections":  # a plug-in's own section (``Settings.plugin_section``)
            self._log.add("(plugin sections)")
            return getattr(target, name)
        self._log.add(self._path.rstrip(".") or "(everything)")
        return getattr(target, name)


def _property_reads(model: BaseModel, name: str, path: str) -> set[str]:
    """The fields a property of ``model`` reads."""
    log: set[str] = set()
    getattr(type(model), name).fget(Watched(model, log, path))
    return log


def _undeclared(kind: str, log: set[str]) -> list[str]:
    """What a stage of ``kind`` read that its ``READS`` does not say (a declared property covers what it reads)."""
    reads = READS[kind]

    def covered(entry: str) -> bool:
        if entry == "(plugin sections)":
            return reads.plugin_sections
        if entry.startswith("streams."):
            field = entry.removeprefix("streams.")
            return field in reads.stream or (
                field not in StreamSettings.model_fields
                and all(covered(e) for e in _property_reads(StreamSettings(id="x", url="demo"), field, "streams."))
            )
        if any(entry == path or entry.startswith(path + ".") for path in reads.settings):
            return True
        return isinstance(getattr(Settings, entry, None), property) and all(
            covered(e) for e in _property_reads(Settings(), entry, "")
        )

    return sorted(entry for entry in log if not covered(entry))


def _config(tmp_path: Path, weights: Path) -> Path:
    """Every section set, so that what reads it runs: a recorded stream, an offline one, webhooks, MQTT."""
    config = tmp_path / "site.toml"
    config.write_text(
        f'runtime_dir = "{tmp_path / "run"}"\nrecordings_dir = "{tmp_path / "rec"}"\n'
        'http_url = "https://site.example:8443"\n'
        '[[streams]]\nid = "cam"\nurl = "demo"\n'
        '[[streams]]\nid = "slow"\nurl = "demo"\nrealtime = false\nsinks = ["live", "webhooks", "mqtt"]\n'
        f'[[webhooks]]\nurl = "http://127.0.0.1:{free_port()}/hook"\n[mqtt]\nhost = "127.0.0.1"\nport = {free_port()}\n'
        f'[detector]\nweights = "{weights}"\nimg_size = 320\ndevice = "cpu"\n'
        '[recording]\nvideo = "camera"\n[pipeline]\npreprocess_workers = 1\n'
    )
    return config


def _reads_at_start(make: Callable, process: str, config: Path, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """What the stages of ``process`` read of their config while made and set up, as the supervisor would."""
    log: set[str] = set()
    monkeypatch.setattr(
        inspect.getmodule(make), "load_settings", lambda _, path: Watched(load_settings(Settings, path), log)
    )
    for member in member_names(process):
        stage = make(member, config, None)
        try:
            stage.setup()
        finally:
            stage.teardown()
            stage.context.destroy(linger=0)
    return log


def test_each_stage_reads_at_start_only_what_its_kind_declares(
    tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, tiny_weights)
    (tmp_path / "run").mkdir()
    monkeypatch.setenv("VWSTAGE_PUBLISH", Endpoint("pull", True, f"ipc://{tmp_path}/publish.ipc").peer("pub").text)
    makers = {entry.name: entry.load() for entry in entry_points(group="vestwatch.stages")}
    undeclared = {}
    for spec in plan(load_settings(Settings, config)).specs:
        log = _reads_at_start(makers[spec.kind], spec.name, config, monkeypatch)
        assert "runtime_dir" in log, f"{spec.name}: its settings were not watched"
        undeclared[spec.name] = _undeclared(spec.kind, log)
    assert undeclared == {name: [] for name in undeclared}, "add these to the kind's READS in stages.topology"
