"""Which processes a config asks for, and which of them a change restarts."""

from __future__ import annotations

from pipeline.stage import member_names, process_name
from stages.config import Settings
from stages.topology import plan


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
