"""Event clips and the review page end to end: the real daemon and the shipped model on a clip of a
real worker without a vest, the JSON API, and the page in a real headless Chromium."""

from __future__ import annotations

import base64
import json
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from stages.media.video import VideoReader
from tests import clips
from tests.browser import Browser
from tests.clips import Walker
from tests.harness import Daemon, probe_video
from tests.violations import Listener, start_daemon

FLOOR = 340
FRAMES = 55  # the worker for 4 s, then 1.5 s of empty yard: their event ends (lost) before the file does
AROUND_S = 1.0  # clip_pre_s and clip_post_s


def api(daemon: Daemon, path: str) -> object:
    with urllib.request.urlopen(f"http://{daemon.http}{path}", timeout=10) as response:
        return json.load(response) if response.headers["Content-Type"] == "application/json" else response.read()


def chromium_and_a_worker(tmp_path: Path) -> tuple[str, Path]:
    """Headless Chromium, and a clip of a real worker without a vest walking for 4 s (or a skip)."""
    if clips.dataset() is None:
        pytest.skip(f"construction-site-safety dataset not found at {clips.DATASET} (the ../shared checkout)")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (deploy/setup.sh --dev installs it)")
    worker = Walker(clips.NO_VEST_JACKET, (280, FLOOR), (330, FLOOR), 0, 39)
    return chromium, clips.write_clip(tmp_path / "clip.mp4", [worker], FRAMES)


def test_an_event_clip_plays_in_the_review_page_and_an_acknowledgement_survives_a_restart(tmp_path: Path) -> None:
    chromium, clip = chromium_and_a_worker(tmp_path)
    around = {"clip_pre_s": AROUND_S, "clip_post_s": AROUND_S}
    daemon = start_daemon(tmp_path, clip, None, events=around)
    browser = None
    try:
        listener = Listener(daemon.endpoint, FRAMES, until=lambda got: any(m.get("phase") == "end" for m in got))
        daemon.wait_ready()
        messages = listener.messages()
        end = next(m for m in messages if m.get("phase") == "end")
        first = next(m for m in messages if m["type"] == "det")["captured"]  # the file's clock starts there
        event_id = end["event_id"]
        quoted = urllib.parse.quote(event_id, safe="")
        assert end["clip_url"] == f"http://{daemon.http}/api/events/{quoted}/clip.mp4"
        assert end["snapshot_url"] == f"http://{daemon.http}/api/events/{quoted}/snapshot.jpg"

        # the clip: written once clip_post_s more is recorded; from the keyframe before the start
        daemon.output.wait_for(lambda line: f"clip {end['clip']}" in line, 60)
        stream, problems = probe_video(Path(end["clip"]))
        assert problems == "" and stream["codec_name"] == "h264"
        last = first + (FRAMES - 1) / clips.FPS
        wanted = min(end["ended"] + AROUND_S, last) - max(end["started"] - AROUND_S, first)  # what was recorded
        assert wanted * clips.FPS <= int(stream["nb_read_frames"]) <= (wanted + 2) * clips.FPS + 1, stream

        (listed,) = api(daemon, "/api/events")["events"]
        assert listed["event_id"] == event_id and listed["phase"] == "end" and listed["acknowledged"] is None
        assert listed["clip_url"] == f"/api/events/{quoted}/clip.mp4"
        assert api(daemon, listed["clip_url"]) == Path(end["clip"]).read_bytes()
        assert api(daemon, listed["snapshot_url"])[:2] == b"\xff\xd8", "a JPEG"
        nothing = {"total": 0, "offset": 0, "limit": 200, "events": [], "privacy": {"blur": [], "faces": False}}
        assert api(daemon, "/api/events?stream=elsewhere") == nothing

        browser = Browser(chromium, tmp_path / "profile")
        browser.call("Page.navigate", url=f"http://{daemon.http}/")
        row = f"document.querySelector('#events tr[data-event=\"{event_id}\"]')"
        cells = browser.wait_for(f"{row} && [...{row}.cells].map(c => c.innerText)")
        assert cells[1] == "yard" and cells[2] == "site" and cells[4] == "vest", cells
        assert " UTC+" in cells[5] or " UTC-" in cells[5], "local time with its offset"
        assert browser.evaluate(f"{row}.querySelector('img').naturalWidth") > 0, "the snapshot shows"

        browser.evaluate(f"{row}.click()")
        played = browser.wait_for("(v => v.currentTime > 0.5 && v.currentTime)(document.getElementById('player'))")
        assert played > 0.5, "the clip plays in the page"

        browser.evaluate(f"{row}.querySelector('button.ack').click()")
        browser.wait_for(f"{row}.querySelector('.acknowledged').innerText.startsWith('yes')")

        code, _ = daemon.stop()
        assert code == 0
        daemon = Daemon(daemon.config)
        daemon.http = next(line for line in daemon.config.read_text().splitlines() if line.startswith("http ="))
        daemon.http = daemon.http.split('"')[1]
        daemon.wait_ready()
        browser.call("Page.reload")
        acknowledged = browser.wait_for(f"{row} && {row}.querySelector('.acknowledged').innerText")
        assert acknowledged.startswith("yes"), "the acknowledgement outlived the daemon"

        # the day filter is the viewer's day, not the server's: a browser 14 h ahead of this machine
        browser.call("Emulation.setTimezoneOverride", timezoneId="Pacific/Kiritimati")
        browser.call("Page.reload")
        browser.wait_for(f"{row} !== null")
        day_before = "(d => { d.setDate(d.getDate() - 1); return d.toLocaleDateString('sv'); })(new Date())"
        browser.evaluate(f"(i => {{ i.value = {day_before}; i.dispatchEvent(new Event('change')); }})"
                         "(document.getElementById('day'))")  # fmt: skip
        browser.wait_for(f"{row} === null")
        browser.evaluate("document.getElementById('today').click()")
        browser.wait_for(f"{row} !== null")
    finally:
        if browser is not None:
            browser.close()
        daemon.close()


def test_the_page_draws_the_people_over_a_clip_of_the_cameras_own_video(tmp_path: Path) -> None:
    """``recording.video = "camera"``: the clip is the camera's frames, untouched; the page draws each
    detected frame's people over it, the event's person in cyan as in the snapshot."""
    chromium, clip = chromium_and_a_worker(tmp_path)
    around = {"clip_pre_s": AROUND_S, "clip_post_s": AROUND_S}
    daemon = start_daemon(tmp_path, clip, None, events=around, recording={"video": "camera"})
    browser = None
    try:
        listener = Listener(daemon.endpoint, FRAMES, until=lambda got: any(m.get("phase") == "end" for m in got))
        daemon.wait_ready()
        messages = listener.messages()
        start, end = (next(m for m in messages if m.get("phase") == phase) for phase in ("start", "end"))
        shown = next(m for m in messages if m["type"] == "det" and m["seq"] == start["seq"])
        assert Path(start["segment"]).is_file() and start["offset_s"] == pytest.approx(shown["pts"], abs=0.002), (
            "where in the copied recording the event's frame is: its own time there"
        )
        daemon.output.wait_for(lambda line: f"clip {end['clip']}" in line, 60)
        with VideoReader(clip) as source, VideoReader(Path(end["clip"])) as cut:
            recorded = [frame.image for frame in cut.frames()]
            original = [frame.image for frame in source.frames()][: len(recorded)]
        assert all(np.array_equal(a, b) for a, b in zip(recorded, original, strict=True)), "nothing drawn on it"

        (listed,) = api(daemon, "/api/events")["events"]
        quoted = urllib.parse.quote(end["event_id"], safe="")
        assert listed["people_url"] == f"/api/events/{quoted}/people.jsonl"
        lines = [json.loads(line) for line in api(daemon, listed["people_url"]).decode().splitlines()]
        assert [line["t"] for line in lines] == sorted(line["t"] for line in lines) and lines[0]["t"] >= 0
        assert (lines[0]["width"], lines[0]["height"]) == (640, 360), "the size the boxes are in"
        assert all(abs(line["t"] * clips.FPS - round(line["t"] * clips.FPS)) < 0.01 for line in lines), (
            "timed by the frames' own timestamps, as the clip's frames are, not by when they were captured"
        )
        assert any(p["track_id"] == end["track_id"] and p["vest"] == "no" for line in lines for p in line["people"])

        browser = Browser(chromium, tmp_path / "profile")
        browser.call("Page.navigate", url=f"http://{daemon.http}/")
        row = f"document.querySelector('#events tr[data-event=\"{end['event_id']}\"]')"
        browser.wait_for(f"{row} !== null")
        browser.evaluate(f"{row}.click()")
        cyan = (
            "(c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
            " for (let i = 0; i < d.length; i += 4) n += d[i] < 60 && d[i + 1] > 200 && d[i + 2] > 200 && d[i + 3] > 0;"
            " return n; })(document.getElementById('overlay'))"
        )
        assert browser.wait_for(f"{cyan} > 100 && {cyan}") > 100, "the event's person is outlined over the clip"
        box = browser.evaluate(
            "(r => [r.x + scrollX, r.y + scrollY, r.width, r.height])"
            "(document.getElementById('player-frame').getBoundingClientRect())"
        )
        area = dict(zip(("x", "y", "width", "height"), box, strict=True), scale=1)
        shot = browser.call("Page.captureScreenshot", clip=area, captureBeyondViewport=True)["data"]
        (tmp_path / "review-camera-clip.png").write_bytes(base64.b64decode(shot))  # for a person to look at
    finally:
        if browser is not None:
            browser.close()
        daemon.close()
