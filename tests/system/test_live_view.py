"""The live view in a real headless Chromium: every stream listed, every stream's picture updating."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.browser import Browser
from tests.harness import collect, free_port


def test_live_page_lists_streams_frames_update_and_a_dead_camera_has_a_banner(
    daemon, make_video, tmp_path: Path
) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (deploy/setup.sh --dev installs it)")
    clip = make_video("clip.mp4", seconds=2, fps=10)
    streams = [
        {"id": "north", "url": str(clip), "loop": True, "realtime": True},
        {"id": "south", "url": str(clip), "loop": True, "realtime": True, "record": False},
        {"id": "dead", "url": f"rtsp://127.0.0.1:{free_port()}/nothing-listens"},
    ]
    vestwatch = daemon(streams)
    vestwatch.wait_ready()
    collect(vestwatch.endpoint, lambda m: len(m.get("north", [])) >= 3 and len(m.get("south", [])) >= 3, timeout=60)
    http = next(line for line in vestwatch.config.read_text().splitlines() if line.startswith("http"))

    browser = Browser(chromium, tmp_path / "profile")
    try:
        browser.call("Page.navigate", url=f"http://{http.split(chr(34))[1]}/")
        rows = "[...document.querySelectorAll('#table tbody tr')].map(r => r.innerText)"
        watched = "(rows => rows.length == 3 && rows.filter(r => r.split('\\t')[1] == 'watching').length == 2 && rows)"
        rows = browser.wait_for(f"{watched}({rows})")  # each camera's state as its stream stage judged it
        assert sorted(row.split("\t")[0] for row in rows) == ["dead", "north", "south"]
        assert [row.split("\t")[1] == "watching" for row in sorted(rows)] == [False, True, True], rows
        banner = "document.querySelector('figure[data-stream=\"{}\"] .banner')"
        dead = browser.wait_for(f"(b => !b.hidden && b.innerText)({banner.format('dead')})")
        assert dead.startswith("down: source lost, reconnecting"), dead
        north = banner.format("north")  # a working camera has none, once its first detections are in
        try:
            browser.wait_for(f"{north}.hidden")
        except TimeoutError:
            raise AssertionError(f"north's banner: {browser.evaluate(f'{north}.innerText')}") from None
        for stream in ("north", "south"):
            distinct = browser.wait_for(
                f"(n => n >= 3 && n)(+document.getElementById('live-{stream}').dataset.distinct)"
            )
            assert distinct >= 3, f"{stream}: the picture did not change"
        assert "model tiny.safetensors on cpu" in browser.evaluate("document.getElementById('summary').innerText")
    finally:
        browser.close()
