"""The review page as a safety officer uses it, in a real headless Chromium against the real daemon:
a site's history of 60 events on 4 cameras, filtered, paged, played, judged and acknowledged, at
1400 px and on a 390 px phone. Screenshots of both go to ``test-output/`` for a person to look at."""

from __future__ import annotations

import base64
import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.settings import load_settings
from stages.config import Settings
from stages.recording.eventstore import EventStore
from stages.recording.paths import events_db
from tests.browser import Browser
from tests.harness import Daemon

SCREENSHOTS = Path(__file__).resolve().parents[3] / "test-output"
CAMERAS = ("gate", "yard", "north", "south")
EVENTS = 60


def seed(recordings: Path, clip: Path) -> list[dict]:
    """A site's history: 60 ended events, newest first every 10 minutes, a quarter of them also in a
    hardhat zone; each with a snapshot, the newest three with a clip."""
    store = EventStore(events_db(recordings))
    snapshots = recordings / "gate" / "events"
    snapshots.mkdir(parents=True)
    now, seeded = time.time(), []
    for i in range(EVENTS):
        scaffold = i % 4 == 1
        snapshot = snapshots / f"{i}.jpg"
        cv2.imwrite(str(snapshot), np.full((90, 160, 3), (40 + 3 * i, 90, 160), np.uint8))
        event = {
            "event_id": f"{CAMERAS[i % 4]}-{i}",
            "stream": CAMERAS[i % 4],
            "track_id": 100 + i,
            "zones": ["site", "scaffold"] if scaffold else ["site"],
            "require": ["vest", "hardhat"] if scaffold else ["vest"],
            "missing": ["vest", "hardhat"] if scaffold else ["vest"],
            "phase": "end",
            "started": now - 60 - 600 * i,
            "ended": now - 50 - 600 * i,
            "duration_s": 10.0,
            "reason": "left",
            "snapshot": str(snapshot),
            "clip": str(shutil.copy(clip, recordings / f"clip-{i}.mp4")) if i < 3 else None,
        }
        store.record(event)
        seeded.append(event)
    store.close()
    return seeded


@pytest.fixture
def page(daemon, make_video, tmp_path: Path) -> Iterator[tuple[Browser, Daemon]]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (deploy/setup.sh --dev installs it)")
    clip = make_video("clip.mp4", seconds=3, fps=10)
    seed(tmp_path / "recordings", clip)  # where the daemon below keeps its recordings
    # a live camera without processors: the page's events are the seeded ones only
    vestwatch = daemon([{"id": "gate", "url": str(clip), "loop": True, "realtime": True, "processors": []}])
    vestwatch.wait_ready()
    browser = Browser(chromium, tmp_path / "profile")
    try:
        yield browser, vestwatch
    finally:
        browser.close()


def api(daemon: Daemon, query: str) -> dict:
    with urllib.request.urlopen(f"http://{daemon.http}/api/events?{query}", timeout=10) as response:
        return json.load(response)


def screen(browser: Browser, width: int, height: int, mobile: bool) -> None:
    browser.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)


def screenshot(browser: Browser, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    (SCREENSHOTS / name).write_bytes(base64.b64decode(browser.call("Page.captureScreenshot")["data"]))


def choose(browser: Browser, select: str, value: str) -> None:
    browser.evaluate(
        f"(s => {{ s.value = {json.dumps(value)}; s.dispatchEvent(new Event('change')); }})"
        f"(document.getElementById({json.dumps(select)}))"
    )


def count_is(browser: Browser, text: str) -> None:
    try:
        browser.wait_for(f"document.getElementById('count').innerText === {json.dumps(text)}")
    except TimeoutError:
        raise AssertionError(f"count: {browser.evaluate('document.getElementById(`count`).innerText')!r}") from None


def key(browser: Browser, name: str) -> None:
    """A key pressed on the page, as a person would (the DevTools protocol's input, not a script's event)."""
    code = 27 if name == "Escape" else ord(name.upper())  # what Chromium makes the key event of
    for kind in ("rawKeyDown" if len(name) > 1 else "keyDown", "keyUp"):
        text = name if kind == "keyDown" else ""
        browser.call("Input.dispatchKeyEvent", type=kind, key=name, text=text, windowsVirtualKeyCode=code)


PLAYING = "document.querySelector('#events tr.playing')?.dataset.event"
ROW_TOP = "document.querySelector('#events tbody tr:nth-child({n})').getBoundingClientRect().top"
PLAYER_STATE = (  # what the page's player is at, said when it does not play
    "(p => JSON.stringify({box_hidden: document.getElementById('player-box').hidden, caption:"
    " document.getElementById('player-caption').innerText, src: p.currentSrc, ready: p.readyState, network:"
    " p.networkState, error: p.error && p.error.message, time: p.currentTime, duration: p.duration,"
    " paused: p.paused}))(document.getElementById('player'))"
)


def plays(browser: Browser) -> None:
    """The player gets past its first 0.3 s; if not, the failure says what it was at."""
    browser.wait_for("document.getElementById('player').currentTime > 0.3", explain=PLAYER_STATE)


def test_filters_paging_player_verdicts_and_acknowledging_at_1400_px(page: tuple[Browser, Daemon]) -> None:
    browser, vestwatch = page
    screen(browser, 1400, 900, mobile=False)
    browser.call("Page.navigate", url=f"http://{vestwatch.http}/")
    count_is(browser, f"1-50 of {EVENTS} event(s)")
    assert browser.evaluate(ROW_TOP.format(n=1)) < 400, "the events start at the top, whatever the cameras"

    browser.evaluate("document.getElementById('older').click()")
    count_is(browser, f"51-60 of {EVENTS} event(s)")
    browser.evaluate("document.getElementById('newer').click()")
    count_is(browser, f"1-50 of {EVENTS} event(s)")

    choose(browser, "camera", "yard")
    count_is(browser, "1-15 of 15 event(s)")
    cameras = browser.evaluate("[...document.querySelectorAll('#events tbody tr')].map(r => r.cells[1].innerText)")
    assert set(cameras) == {"yard"}
    choose(browser, "camera", "")
    browser.wait_for("[...document.getElementById('zone').options].some(o => o.value === 'scaffold')")
    choose(browser, "zone", "scaffold")
    count_is(browser, "1-15 of 15 event(s)")
    choose(browser, "missing", "hardhat")
    count_is(browser, "1-15 of 15 event(s)")
    assert api(vestwatch, "zone=scaffold&missing=hardhat")["total"] == 15
    browser.evaluate("document.getElementById('clear').click()")
    count_is(browser, f"1-50 of {EVENTS} event(s)")

    # the player opens beside the list: the clicked row stays where it was
    before = browser.evaluate(ROW_TOP.format(n=1))
    browser.evaluate("document.querySelector('#events tbody tr:nth-child(1)').click()")
    browser.wait_for("!document.getElementById('player-box').hidden")
    assert browser.evaluate(ROW_TOP.format(n=1)) == before, "opening the player moved the list"
    plays(browser)
    assert browser.evaluate(PLAYING) == "gate-0"
    browser.evaluate("document.getElementById('next').click()")
    browser.wait_for(f"{PLAYING} === 'yard-1'")
    key(browser, "j")
    browser.wait_for(f"{PLAYING} === 'north-2'")
    key(browser, "k")
    browser.wait_for(f"{PLAYING} === 'yard-1'")
    key(browser, "f")  # a false alarm, kept for retraining
    browser.wait_for("document.getElementById('player-false').classList.contains('chosen')")
    (judged,) = api(vestwatch, "verdict=false_alarm")["events"]
    assert judged["event_id"] == "yard-1" and judged["acknowledged"], "a verdict is an acknowledgement"
    gate = "document.querySelector('#events tr[data-event=\"gate-0\"]')"
    browser.evaluate(f"{gate}.querySelector('button[data-verdict=confirmed]').click()")
    browser.wait_for(f"{gate}.querySelector('button.chosen') !== null")
    assert [e["event_id"] for e in api(vestwatch, "verdict=confirmed")["events"]] == ["gate-0"]

    choose(browser, "state", "acknowledged=no")
    count_is(browser, f"1-50 of {EVENTS - 2} event(s)")
    browser.evaluate("document.getElementById('ack-shown').click()")
    count_is(browser, f"1-{EVENTS - 52} of {EVENTS - 52} event(s)")
    assert api(vestwatch, "acknowledged=yes")["total"] == 52
    key(browser, "Escape")
    browser.wait_for("document.getElementById('player-box').hidden")
    choose(browser, "state", "")
    count_is(browser, f"1-50 of {EVENTS} event(s)")
    browser.evaluate("document.querySelector('#events tbody tr:nth-child(1)').click()")
    plays(browser)
    screenshot(browser, "review-1400.png")


def test_a_phone_shows_cards_that_fit_and_a_player_that_fits(page: tuple[Browser, Daemon]) -> None:
    browser, vestwatch = page
    screen(browser, 390, 844, mobile=True)
    browser.call("Page.navigate", url=f"http://{vestwatch.http}/")
    count_is(browser, f"1-50 of {EVENTS} event(s)")
    wide = browser.evaluate(
        "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 391)"
        ".map(e => `${e.tagName}#${e.id}.${e.className}: ${Math.round(e.getBoundingClientRect().right)}`)"
    )
    assert browser.evaluate("document.documentElement.scrollWidth") <= 390, f"wider than the phone: {wide[:8]}"
    card = "document.querySelector('#events tbody tr:nth-child(1)')"
    for part in ("td:nth-child(6)", "button.ack", "td:nth-child(2)", "td:nth-child(5)"):  # start, acknowledge, ...
        right = browser.evaluate(f"{card}.querySelector('{part}').getBoundingClientRect().right")
        assert 0 < right <= 390, f"{part} is off screen ({right})"
    browser.evaluate(f"{card}.click()")
    plays(browser)
    box = browser.evaluate(
        "(r => [r.left, r.right, r.bottom])(document.getElementById('player').getBoundingClientRect())"
    )
    assert box[0] >= 0 and box[1] <= 390 and box[2] <= 844, f"the player does not fit the screen: {box}"
    assert browser.evaluate("document.getElementById('player-box').getBoundingClientRect().top") == 0
    screenshot(browser, "review-390.png")
    browser.evaluate("document.getElementById('player-close').click()")
    browser.evaluate(f"{card}.querySelector('button.ack').click()")
    browser.wait_for(f"{card}.querySelector('.acknowledged').innerText.startsWith('yes')")


def test_a_cameras_day_plays_its_recording_from_a_click_and_exports_a_stretch(page: tuple[Browser, Daemon]) -> None:
    browser, vestwatch = page
    screen(browser, 1400, 900, mobile=False)
    browser.call("Page.navigate", url=f"http://{vestwatch.http}/")
    bar = "document.querySelector('.day[data-stream=\"gate\"] .daybar')"
    # the live camera records; its bar shows the stretch once the page looks again (every 30 s, or a new day)
    recorded = f"Boolean({bar}?.querySelector('.span'))"
    deadline = time.monotonic() + 90
    while not browser.evaluate(recorded):
        assert time.monotonic() < deadline, "no recorded stretch on gate's bar"
        browser.evaluate("(i => { i.value = localDay(new Date()); i.dispatchEvent(new Event('change')); })"
                         "(document.getElementById('rec-day'))")  # fmt: skip
        time.sleep(1)
    marks = browser.evaluate(f"[...{bar}.querySelectorAll('.mark')].map(m => m.dataset.event)")
    assert "gate-0" in marks and "yard-1" not in marks, "the camera's own violations on its bar"
    browser.evaluate(f"{bar}.scrollIntoView({{block: 'center'}})")  # under the events: clicked where it shows
    span = browser.evaluate(
        f"(r => [r.left, r.right, r.top, r.height])({bar}.querySelector('.span').getBoundingClientRect())"
    )
    x, y = (span[0] + span[1]) / 2, span[2] + span[3] / 2  # the middle of what was recorded
    under = browser.evaluate(f"document.elementFromPoint({x}, {y})?.closest('.daybar') === {bar}")
    assert under, "the bar moved between finding it and clicking it"
    click(browser, x, y)
    plays(browser)
    caption = browser.evaluate("document.getElementById('player-caption').innerText")
    assert caption.startswith("gate, recording from ") and "following the camera" in caption, caption
    # played up to the present, it goes on with what the camera recorded since
    recorded_then = browser.evaluate("recording.start + recording.duration_s")
    browser.wait_for(
        f"recording && recording.start + document.getElementById('player').currentTime > {recorded_then} + 1",
        timeout=60,
        explain=PLAYER_STATE,
    )
    browser.wait_for(f"!{bar}.querySelector('.now').hidden")  # where it plays, on the bar
    screenshot(browser, "review-day-live.png")

    # a violation the model missed, at the moment playing: noted for the site dataset
    browser.evaluate("document.getElementById('player').pause()")
    moment = browser.evaluate("recording.start + document.getElementById('player').currentTime")
    browser.evaluate("document.getElementById('player-missed').click()")
    said = browser.wait_for("(t => t.startsWith('noted') && t)(document.getElementById('player-caption').innerText)")
    assert said.startswith("noted: a missed violation on gate at "), said
    store = EventStore(events_db(vestwatch.config.parent / "recordings"))
    (noted,) = store.query("SELECT stream, at FROM missed")
    store.close()
    assert noted["stream"] == "gate" and noted["at"] == pytest.approx(moment, abs=0.5)

    choose(browser, "export-camera", "gate")
    now = time.time()
    midnight = time.mktime((*time.localtime(now)[:3], 0, 0, 0, 0, 0, -1))
    for name, moment in (("export-from", max(midnight, now - 62)), ("export-to", now - 2)):  # today's, as the page's
        choose(browser, name, time.strftime("%H:%M:%S", time.localtime(moment)))
    href = browser.evaluate("document.getElementById('export').href")
    assert "/api/recordings/gate/export.mp4?from=" in href
    with urllib.request.urlopen(href, timeout=60) as response:
        assert response.headers["Content-Type"] == "video/mp4" and len(response.read()) > 10_000


def click(browser: Browser, x: float, y: float, count: int = 1) -> None:
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=count)


def test_a_zone_drawn_on_the_cameras_picture_is_saved_to_the_config_and_read_back(
    page: tuple[Browser, Daemon],
) -> None:
    browser, vestwatch = page
    screen(browser, 1400, 900, mobile=False)
    browser.call("Page.navigate", url=f"http://{vestwatch.http}/")
    browser.wait_for("document.querySelector('figure[data-stream=\"gate\"] .edit-zones') !== null")
    browser.evaluate("document.querySelector('figure[data-stream=\"gate\"] .edit-zones').click()")
    browser.wait_for("(p => p.complete && p.naturalWidth > 0)(document.getElementById('zone-picture'))")
    assert browser.evaluate("[...document.getElementById('zone-list').options].map(o => o.text)") == [
        "site (whole frame)"
    ]
    browser.evaluate("document.getElementById('zone-new').click()")
    box = browser.evaluate("(r => [r.left, r.top, r.width, r.height])(document.getElementById('zone-canvas')"
                           ".getBoundingClientRect())")  # fmt: skip
    corners = [(0.1, 0.4), (0.6, 0.4), (0.6, 0.95), (0.1, 0.95)]
    for fx, fy in corners:
        click(browser, box[0] + fx * box[2], box[1] + fy * box[3])
    click(browser, box[0] + 0.6 * box[2], box[1] + 0.95 * box[3], count=2)  # a double click removes a corner
    click(browser, box[0] + 0.65 * box[2], box[1] + 0.9 * box[3])  # and one more goes in its place
    corners[2] = (0.65, 0.9)
    browser.evaluate(
        "(set => { set('zone-name', 'scaffold', 'input'); set('zone-name', 'scaffold', 'change');"
        " set('zone-dwell', '1.5', 'change'); })"
        "((id, v, kind) => { const i = document.getElementById(id); i.value = v; i.dispatchEvent(new Event(kind)); })"
    )
    status = (
        "(s => s.startsWith('saved') || s.includes(':') ? s : '')(document.getElementById('zone-status').innerText)"
    )
    before = vestwatch.config.read_text()
    browser.evaluate("document.getElementById('zone-hardhat').click()")  # the test model sees no hardhats
    browser.evaluate("document.getElementById('zone-save').click()")
    refused = browser.wait_for(status, timeout=120)  # the model is loaded to check the zones' PPE
    assert refused.startswith("zones not saved: streams.zones.require: the model sees neither 'hardhat'"), refused
    assert vestwatch.config.read_text() == before, "nothing written that a reload would refuse"
    browser.evaluate("document.getElementById('zone-status').innerText = ''")
    browser.evaluate("document.getElementById('zone-hardhat').click()")
    browser.evaluate("document.getElementById('zone-save').click()")
    saved = browser.wait_for(status, timeout=120)
    assert saved.startswith("saved; gate reloads with 2 zone(s)"), saved
    screenshot(browser, "zones-editor-1400.png")

    settings = load_settings(Settings, vestwatch.config)
    (site, scaffold) = settings.streams[0].zones
    assert site.polygon is None and (scaffold.name, scaffold.require, scaffold.dwell_s) == ("scaffold", ["vest"], 1.5)
    assert [(round(x, 2), round(y, 2)) for x, y in scaffold.polygon] == corners, "saved where it was drawn"
    vestwatch.output.wait_for(lambda line: "reloaded:" in line and "stream.gate" in line, 120)

    browser.call("Page.reload")  # read back: the editor shows what the file now holds
    browser.wait_for("document.querySelector('figure[data-stream=\"gate\"] .edit-zones') !== null")
    browser.evaluate("document.querySelector('figure[data-stream=\"gate\"] .edit-zones').click()")
    browser.wait_for("document.getElementById('zone-list').options.length === 2")
    assert browser.evaluate("[...document.getElementById('zone-list').options].map(o => o.text)") == [
        "site (whole frame)",
        "scaffold",
    ]
