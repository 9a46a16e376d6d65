"""The compliance report end to end: a clip whose people are known (``tests.clips``) through the real
daemon and the shipped model, the figures it stored as it stopped, ``vestwatch report`` to JSON and
PDF, and the ``/report`` page in Chromium (a screenshot goes to ``test-output/``)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.settings import load_settings
from pipeline.web import serve
from stages.config import Settings
from stages.web.compliance import ComplianceApi
from stages.web.review import ReviewApi
from tests import clips
from tests.browser import Browser
from tests.clips import FPS, Walker
from tests.violations import Listener, start_daemon

FLOOR = 340
TAIL = 15
NO_VEST = Walker(clips.NO_VEST_JACKET, (190, FLOOR), (230, FLOOR), 0, 59)  # 6 s, standing left
VEST = Walker(clips.VEST_YELLOW, (480, FLOOR), (440, FLOOR), 30, 109)  # 8 s, right, from 3 s on
FRAMES = 110 + TAIL
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output"


def seconds_in_view(walker: Walker) -> float:
    return (walker.last - walker.first + 1) / FPS


def report(config: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "report", "-c", str(config), "--out", str(out), *options],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clip played through the daemon, which is then stopped (its figures stored); its config."""
    if clips.dataset() is None:
        pytest.skip(f"construction-site-safety dataset not found at {clips.DATASET} (the ../shared checkout)")
    folder = tmp_path_factory.mktemp("compliance")
    clip = clips.write_clip(folder / "clip.mp4", [NO_VEST, VEST], FRAMES)
    daemon = start_daemon(folder, clip, None)
    try:
        listener = Listener(daemon.endpoint, FRAMES)
        daemon.wait_ready()
        listener.messages()
        code, _ = daemon.stop(timeout=60)
        assert code == 0, daemon.output.text()[-2000:]
    finally:
        daemon.close()
    return daemon.config


def test_the_report_holds_the_clips_person_seconds_and_compliance_within_ten_percent(
    played: Path, tmp_path: Path
) -> None:
    done = report(played, tmp_path / "cameras.json", "--group", "camera")
    assert done.returncode == 0, done.stderr
    found = json.loads((tmp_path / "cameras.json").read_text())
    (camera,) = found["rows"]
    no_vest, vest = seconds_in_view(NO_VEST), seconds_in_view(VEST)
    summary = json.dumps(camera)
    assert camera["stream"] == "yard"
    assert camera["vest_no_s"] == pytest.approx(no_vest, rel=0.1), summary
    assert camera["vest_yes_s"] == pytest.approx(vest, rel=0.1), summary
    assert camera["observed_s"] == pytest.approx(no_vest + vest, rel=0.1), summary
    assert camera["compliance"] == pytest.approx(vest / (vest + no_vest), rel=0.1), summary
    assert camera["watched_s"] == pytest.approx((FRAMES - 1) / FPS, rel=0.1), summary
    assert camera["people"] == 2, summary
    assert camera["violations"] == 1, summary
    assert found["total"]["observed_s"] == camera["observed_s"]


def test_vestwatch_report_prints_the_page_to_pdf(played: Path, tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (deploy/setup.sh --dev installs it)")
    done = report(played, tmp_path / "report.pdf")
    assert done.returncode == 0, done.stderr
    pdf = (tmp_path / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page") >= 2, len(pdf)
    missing = report(played, tmp_path / "none.pdf", "--chromium", "no-such-chromium")
    assert missing.returncode == 2 and "apt install chromium" in missing.stderr
    assert not (tmp_path / "none.pdf").exists()


def test_the_report_page_draws_its_figures(played: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (deploy/setup.sh --dev installs it)")
    review = ReviewApi(load_settings(Settings, played))
    server = serve("127.0.0.1:0", review.routes() | ComplianceApi(review.store).routes())
    browser = Browser(chromium, tmp_path / "profile")
    try:
        browser.call("Emulation.setDeviceMetricsOverride", width=1200, height=2400, deviceScaleFactor=1, mobile=False)
        browser.call("Page.navigate", url=f"http://127.0.0.1:{server.server_address[1]}/report")
        assert browser.wait_for("document.body.dataset.ready", timeout=60) == "yes"
        tiles = browser.evaluate("[...document.querySelectorAll('#tiles .tile')].map(t => t.innerText)")
        rate = round(seconds_in_view(VEST) / (seconds_in_view(VEST) + seconds_in_view(NO_VEST)) * 100)
        rate_tile = next(t for t in tiles if "compliance rate" in t)
        assert abs(int(rate_tile.split("%")[0]) - rate) <= 6, tiles
        assert browser.evaluate("document.querySelectorAll('#per-day circle').length") >= 1, "today's point"
        assert browser.evaluate("document.querySelectorAll('#heatmap rect').length") == 7 * 24
        assert browser.evaluate("document.querySelectorAll('#feet rect').length") >= 1, "where the violator stood"
        assert browser.evaluate("document.querySelectorAll('#violations tbody tr').length") == 1
        words = browser.evaluate("document.getElementById('words').innerText")
        assert "Compliance over the period" in words and "Most violations: yard, 1." in words, words
        SCREENSHOTS.mkdir(exist_ok=True)
        shot = browser.call("Page.captureScreenshot", captureBeyondViewport=True)["data"]
        (SCREENSHOTS / "report-1200.png").write_bytes(base64.b64decode(shot))
    finally:
        browser.close()
        server.shutdown()
        review.store.close()
