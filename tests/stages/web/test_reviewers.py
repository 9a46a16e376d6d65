"""Who sees faces, through the real HTTP server: with ``privacy.reviewer_password_hash`` only who gives the
reviewers' secret is shown unblurred evidence, the page's own secret shows it blurred; without it every
holder of the page's secret is a reviewer. Each unblurred file handed out is logged with who asked."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.httpauth import Guard, hash_secret
from pipeline.web import serve
from stages.config import Settings
from stages.recording.blurring import note_blurring
from stages.recording.eventstore import EventStore
from stages.recording.paths import with_faces
from stages.web.privacy import REVIEWER
from stages.web.review import ReviewApi
from tests.harness import free_port

PAGES, REVIEWERS = "the site office's secret", "the safety officer's secret"
SNAPSHOT = "/api/events/gate-1/snapshot.jpg"


def settings_in(folder: Path, reviewer_secret: bool) -> Settings:
    privacy = {"blur": ["heads"], "reviewers_see_faces": True}
    if reviewer_secret:
        privacy["reviewer_password_hash"] = hash_secret(REVIEWERS, iterations=1000)
    return Settings(
        recordings_dir=folder / "rec",
        runtime_dir=folder / "run",
        streams=[{"id": "gate", "url": "demo"}],
        http_password_hash=hash_secret(PAGES, iterations=1000),
        privacy=privacy,
    )


def serving(settings: Settings) -> tuple[str, object]:
    """A violation on ``gate`` with its blurred snapshot and the unblurred copy, served as the daemon does."""
    note_blurring(settings, time.time() - 60)
    snapshot = settings.recordings_dir / "gate" / "gate-1.jpg"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(b"blurred")
    with_faces(snapshot).write_bytes(b"faces")
    event = {"stream": "gate", "track_id": 1, "zones": ["site"], "missing": ["vest"], "duration_s": 1.0}
    store = EventStore(settings.events_db)
    store.record(event | {"event_id": "gate-1", "phase": "start", "started": time.time(), "snapshot": str(snapshot)})
    store.close()
    secret = settings.privacy.reviewer_password_hash
    guard = Guard(settings.http_password_hash, {REVIEWER: secret} if secret else {})
    address = f"127.0.0.1:{free_port()}"
    return address, serve(address, ReviewApi(settings).routes(), guard=guard)


def get(address: str, path: str, secret: str) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://{address}{path}")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"officer:{secret}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def listed(address: str, secret: str) -> tuple[dict, dict]:
    status, body = get(address, "/api/events", secret)
    assert status == 200, body
    listing = json.loads(body)
    return listing["privacy"], listing["events"][0]


def test_only_the_reviewers_secret_shows_faces_and_each_showing_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    address, server = serving(settings_in(tmp_path, reviewer_secret=True))
    try:
        privacy, event = listed(address, PAGES)
        assert privacy == {"blur": ["heads"], "faces": False} and "snapshot_faces_url" not in event
        assert get(address, SNAPSHOT, PAGES) == (200, b"blurred"), "the page's secret opens the page, blurred"
        status, body = get(address, f"{SNAPSHOT}?faces=1", PAGES)
        assert status == 403 and "reviewer_password_hash" in json.loads(body)["error"]

        privacy, event = listed(address, REVIEWERS)
        assert privacy["faces"] and event["snapshot_faces_url"] == f"{SNAPSHOT}?faces=1", "the reviewers' opens it too"
        with caplog.at_level(logging.INFO, logger="stages.web.privacy"):
            assert get(address, f"{SNAPSHOT}?faces=1", REVIEWERS) == (200, b"faces")
            assert get(address, f"{SNAPSHOT}?faces=1", REVIEWERS) == (200, b"faces")
        said = [r.getMessage() for r in caplog.records if r.name == "stages.web.privacy"]
        assert said == [f"privacy: unblurred {SNAPSHOT} shown to 127.0.0.1 (reviewer)"], "once an hour per file"
        assert get(address, SNAPSHOT, "a wrong secret")[0] == 401
    finally:
        server.shutdown()


def test_without_a_reviewers_secret_every_holder_of_the_pages_secret_is_a_reviewer(tmp_path: Path) -> None:
    address, server = serving(settings_in(tmp_path, reviewer_secret=False))
    try:
        privacy, event = listed(address, PAGES)
        assert privacy["faces"] and event["snapshot_faces_url"] == f"{SNAPSHOT}?faces=1"
        assert get(address, f"{SNAPSHOT}?faces=1", PAGES) == (200, b"faces")
    finally:
        server.shutdown()


def test_a_reviewers_secret_without_faces_for_reviewers_is_refused_and_the_command_hashes_one() -> None:
    hashed = hash_secret(REVIEWERS, iterations=1000)
    with pytest.raises(ValidationError, match="reviewers_see_faces"):
        Settings(http_password_hash=hashed, privacy={"blur": ["heads"], "reviewer_password_hash": hashed})
    command = [sys.executable, "-m", "pipeline.cli", "http-password", "--reviewer"]
    done = subprocess.run(command, input=f"{REVIEWERS}\n", capture_output=True, text=True, timeout=60, check=True)
    line = done.stdout.strip()
    assert line.startswith('reviewer_password_hash = "') and "[privacy]" in line
    guard = Guard(hash_secret(PAGES, iterations=1000), {REVIEWER: line.split('"')[1]})
    assert guard.allows(f"Bearer {REVIEWERS}", "10.0.0.7") == REVIEWER
    assert guard.allows(f"Bearer {PAGES}", "10.0.0.7") == "reader"
