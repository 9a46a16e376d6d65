"""``[privacy]`` end to end: the real daemon and the shipped model on a clip of a worker without a vest,
heads blurred in what leaves the server. One daemon keeps its recording unblurred (its clips stay on the
server; a reviewer with the password sees faces), one blurs its recording (its clips are served); the
same frame of both differs only about the worker's head."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.httpauth import hash_secret
from stages.media.video import VideoReader
from tests import clips
from tests.clips import Walker
from tests.harness import Daemon, probe_video
from tests.violations import Listener, start_daemon

FLOOR = 340
FRAMES = 55  # the worker for 4 s, then 1.5 s of empty yard: their event ends (lost) before the file does
AROUND = {"clip_pre_s": 1.0, "clip_post_s": 1.0}
SECRET = "a long enough secret"
CAPTION = 24  # rows at the bottom of a 360-row frame: the camera and the time
STRONG = 40  # a pixel differing more than this (in any channel) differs by more than JPEG or x264 noise


def get(daemon: Daemon, path: str, secret: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://{daemon.http}{path}")
    if secret:
        request.add_header("Authorization", f"Bearer {secret}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def played(folder: Path, privacy: dict, top: dict | None = None) -> tuple[Daemon, dict, dict]:
    """The worker's clip through a daemon with ``privacy``; the daemon (running), the event's start (the
    snapshot's, with the worker's box) and its end, once its clip is written."""
    if clips.dataset() is None:
        pytest.skip(f"construction-site-safety dataset not found at {clips.DATASET} (the ../shared checkout)")
    worker = Walker(clips.NO_VEST_JACKET, (280, FLOOR), (330, FLOOR), 0, 39)
    folder.mkdir()
    clip = clips.write_clip(folder / "clip.mp4", [worker], FRAMES)
    daemon = start_daemon(folder, clip, None, events=AROUND, top=top, sections={"privacy": privacy})
    listener = Listener(daemon.endpoint, FRAMES, until=lambda got: any(m.get("phase") == "end" for m in got))
    daemon.wait_ready()
    messages = listener.messages()
    start, end = (next(m for m in messages if m.get("phase") == phase) for phase in ("start", "end"))
    daemon.output.wait_for(lambda line: f"clip {end['clip']}" in line, 120)
    return daemon, start, end


def middle_frame(clip: Path) -> np.ndarray:
    with VideoReader(clip) as reader:
        frames = [frame.image for frame in reader.frames()]
    return frames[len(frames) // 2]


def strong_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (np.abs(a.astype(int) - b.astype(int)).max(axis=2) > STRONG).astype(np.uint8)


def in_head_area(differences: np.ndarray, box: list[float]) -> float:
    """The share of the differing pixels that lie about the person's head: above the middle of their box
    (and the 50 px the worker walks)."""
    x1, y1, x2, y2 = box
    margin = (x2 - x1) * 0.4 + 50
    area = np.zeros_like(differences)
    area[: int(y1 + (y2 - y1) / 2), max(0, int(x1 - margin)) : int(x2 + margin)] = 1
    return float((differences & area).sum() / max(1, differences.sum()))


def test_an_unblurred_recording_stays_on_the_server_and_a_blurred_one_is_served(tmp_path: Path) -> None:
    hashed = hash_secret(SECRET, iterations=1000)
    reviewers = {"blur": ["heads"], "reviewers_see_faces": True}
    daemon, start, end = played(tmp_path / "kept", reviewers, top={"http_password_hash": hashed})
    try:
        quoted = urllib.parse.quote(end["event_id"], safe="")
        status, body = get(daemon, "/api/events", SECRET)
        listing = json.loads(body)
        assert status == 200 and listing["privacy"] == {"blur": ["heads"], "faces": True}
        (event,) = listing["events"]
        assert event["clip_url"] is None and "privacy" in event["withheld"]
        assert event["clip_faces_url"] == f"/api/events/{quoted}/clip.mp4?faces=1"
        status, body = get(daemon, f"/api/events/{quoted}/clip.mp4", SECRET)
        assert status == 403 and "is not blurred" in json.loads(body)["error"]
        status, body = get(daemon, event["clip_faces_url"], SECRET)
        assert status == 200 and body == Path(end["clip"]).read_bytes(), "a reviewer gets the clip"
        at = end["started"]
        assert get(daemon, f"/api/recordings/yard/window?at={at}", SECRET)[0] == 403
        assert get(daemon, f"/api/recordings/yard/window?at={at}&faces=1", SECRET)[0] == 200

        status, blurred = get(daemon, event["snapshot_url"], SECRET)
        assert status == 200
        status, faces = get(daemon, event["snapshot_faces_url"], SECRET)
        assert status == 200 and faces != blurred
        snapshots = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in (blurred, faces)]
        differences = strong_differences(*snapshots)
        assert differences.sum() > 100, "the head was hidden"
        assert in_head_area(differences, start["box"]) > 0.95, "and nothing else of the snapshot changed"
        kept_frame = middle_frame(Path(end["clip"]))
    finally:
        daemon.close()

    daemon, start, end = played(tmp_path / "blurred", {"blur": ["heads"], "blur_recordings": True})
    try:
        quoted = urllib.parse.quote(end["event_id"], safe="")
        status, body = get(daemon, f"/api/events/{quoted}/clip.mp4")
        assert status == 200 and body == Path(end["clip"]).read_bytes(), "a blurred recording's clip is served"
        stream, problems = probe_video(Path(end["clip"]))
        assert problems == "" and int(stream["nb_read_frames"]) > 0, "and decodes"
        status, body = get(daemon, f"/api/events/{quoted}/clip.mp4?faces=1")
        assert status == 403 and "reviewers_see_faces" in json.loads(body)["error"]
        differences = strong_differences(kept_frame, middle_frame(Path(end["clip"])))
        differences[-CAPTION:] = 0  # the caption's time: the two daemons ran at different times
        assert differences.sum() > 100, "the recording's frames are blurred"
        assert in_head_area(differences, start["box"]) > 0.9, "about the head only"
    finally:
        daemon.close()
