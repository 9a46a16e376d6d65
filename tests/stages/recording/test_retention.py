"""Retention by age, by each stream's budget and by the disk's free space, on real files."""

import os
import shutil
import time
from pathlib import Path

from stages.recording.paths import REVIEW_CUTS
from stages.recording.retention import REVIEW_CUT_S, apply_retention, make_room


def test_retention_by_age_and_budget(tmp_path: Path) -> None:
    day = tmp_path / "cam" / "2026-01-01"
    day.mkdir(parents=True)
    now = 1_800_000_000.0
    for i in range(5):
        segment = day / f"cam-{i}.ts"
        segment.write_bytes(b"x" * 1000)
        segment.with_suffix(".jsonl").write_bytes(b"y" * 100)
        os.utime(segment, (now - 3600 * (5 - i), now - 3600 * (5 - i)))  # 5 h .. 1 h old
    deleted = apply_retention(tmp_path / "cam", max_age_s=4.5 * 3600, max_bytes=10**9, now=now)
    assert [p.name for p in deleted] == ["cam-0.ts"] and not (day / "cam-0.jsonl").exists()
    deleted = apply_retention(tmp_path / "cam", max_age_s=10**9, max_bytes=2500, now=now)
    assert [p.name for p in deleted] == ["cam-1.ts", "cam-2.ts"]
    assert sorted(p.name for p in day.glob("*.ts")) == ["cam-3.ts", "cam-4.ts"]


def test_retention_counts_event_clips_with_the_segments(tmp_path: Path) -> None:
    day = tmp_path / "cam" / "2026-01-01"
    (day / "clips").mkdir(parents=True)
    now = 1_800_000_000.0
    for name, age_h in (("old.mp4", 9), ("cam-0.ts", 8), ("new.mp4", 2), ("cam-1.ts", 1)):
        path = day / ("clips" if name.endswith(".mp4") else "") / name
        path.write_bytes(b"x" * 1000)
        os.utime(path, (now - 3600 * age_h, now - 3600 * age_h))
    deleted = apply_retention(tmp_path / "cam", max_age_s=8.5 * 3600, max_bytes=10**9, now=now)
    assert [p.name for p in deleted] == ["old.mp4"]
    deleted = apply_retention(tmp_path / "cam", max_age_s=10**9, max_bytes=1500, now=now)
    assert [p.name for p in deleted] == ["cam-0.ts", "new.mp4"], "oldest first, the newest segment kept"


def test_retention_expires_old_event_snapshots(tmp_path: Path) -> None:
    events = tmp_path / "cam" / "2026-01-01" / "events"
    events.mkdir(parents=True)
    now = 1_800_000_000.0
    old, new = events / "cam-old.jpg", events / "cam-new.jpg"
    for path, age_h in ((old, 10), (new, 1)):
        path.write_bytes(b"jpg")
        os.utime(path, (now - 3600 * age_h, now - 3600 * age_h))
    apply_retention(tmp_path / "cam", max_age_s=5 * 3600, max_bytes=10**9, now=now)
    assert not old.exists() and new.exists()


def test_make_room_deletes_the_oldest_of_any_stream_but_never_a_streams_newest(tmp_path: Path) -> None:
    for age, name in enumerate(["a/3.ts", "b/3.ts", "a/2.ts", "b/2.ts", "a/1.ts", "b/1.ts"]):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * 1000)
        path.with_suffix(".jsonl").write_text("{}\n")
        os.utime(path, (1000 + age * 10, 1000 + age * 10))  # a/3 oldest ... b/1 newest
    _, deleted = make_room(tmp_path, shutil.disk_usage(tmp_path).free + 10**15)  # more than any disk
    assert [p.relative_to(tmp_path).as_posix() for p in deleted] == ["a/3.ts", "b/3.ts", "a/2.ts", "b/2.ts"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "a", "a/1.jsonl", "a/1.ts", "b", "b/1.jsonl", "b/1.ts"
    ]  # fmt: skip
    assert make_room(tmp_path, 0)[1] == []


def test_the_review_pages_cuts_go_after_an_hour_and_first_when_space_runs_short(tmp_path: Path) -> None:
    cuts = tmp_path / REVIEW_CUTS
    cuts.mkdir()
    old, fresh = cuts / "gate-1-2.mp4", cuts / "gate-3-4.mp4"
    for cut in (old, fresh):
        cut.write_bytes(b"\0" * 1000)
    os.utime(old, (time.time() - REVIEW_CUT_S - 60,) * 2)
    make_room(tmp_path, min_free=0)
    assert not old.exists() and fresh.exists(), "an hour old: gone; newer: kept while space lasts"
    make_room(tmp_path, min_free=shutil.disk_usage(tmp_path).free + 1)  # short of space now
    assert not fresh.exists(), "cut again when asked for: before any recording"
