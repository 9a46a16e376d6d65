"""The learning loop end to end on the CPU (the mechanics, not the accuracy): the real daemon and the shipped
model on a clip of two workers without vests, a reviewer's verdicts and a missed violation through the
HTTP API, ``vestwatch dataset export``, a one-epoch fine-tune from the shipped weights, and ``vestwatch
model promote`` / ``rollback`` changing the daemon's config file."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import urllib.parse
import urllib.request
from datetime import date
from pathlib import Path

import cv2
import pytest
import torch
import yaml

from pipeline.settings import load_settings
from stages.config import Settings
from stages.detector.checkpoints import load_model, save_weights
from tests import clips
from tests.clips import Walker
from tests.conftest import SHIPPED
from tests.violations import Listener, start_daemon

FLOOR = 340
FIRST = Walker(clips.NO_VEST_JACKET, (200, FLOOR), (260, FLOOR), 0, 34)  # 3.5 s
SECOND = Walker(clips.NO_VEST_CAMO, (420, FLOOR), (380, FLOOR), 45, 79)  # 3.5 s, after the first left
FRAMES = 95
PUBLIC = Path(__file__).resolve().parents[2] / "stages" / "training" / "data" / "construction-site-safety.yaml"


def vestwatch(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def post(http: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://{http}{path}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The clip through the daemon (a sample kept every second); the first event confirmed, the second
    judged a false alarm, a missed violation noted between them. The config, and the verdicts by event."""
    if clips.dataset() is None:
        pytest.skip(f"construction-site-safety dataset not found at {clips.DATASET} (the ../shared checkout)")
    folder = tmp_path_factory.mktemp("site")
    clip = clips.write_clip(folder / "clip.mp4", [FIRST, SECOND], FRAMES)
    daemon = start_daemon(folder, clip, None, sections={"learning": {"sample_every_s": 1.0}})
    try:
        ended = lambda got: sum(m.get("phase") == "end" for m in got) >= 2  # noqa: E731
        listener = Listener(daemon.endpoint, FRAMES, until=ended)
        daemon.wait_ready()
        starts = [m for m in listener.messages() if m.get("phase") == "start"]
        assert len(starts) == 2, starts
        verdicts = {starts[0]["event_id"]: "confirmed", starts[1]["event_id"]: "false_alarm"}
        for event_id, verdict in verdicts.items():
            post(daemon.http, f"/api/events/{urllib.parse.quote(event_id, safe='')}/verdict", {"verdict": verdict})
        missed_at = starts[0]["started"] + 4.0  # between the two workers, on the clock the recording keeps
        assert post(daemon.http, "/api/recordings/yard/missed", {"at": missed_at})["at"] == missed_at
        assert daemon.stop(timeout=60)[0] == 0
    finally:
        daemon.close()
    return daemon.config, verdicts


def labels_of(dataset: Path, event_id: str) -> list[list[float]]:
    (found,) = dataset.glob(f"labels/*/yard-{event_id}.txt")
    return [[float(v) for v in line.split()] for line in found.read_text().splitlines()]


def test_the_export_turns_verdicts_samples_and_a_missed_moment_into_a_site_dataset(site, tmp_path: Path) -> None:
    config, verdicts = site
    dataset = tmp_path / "site"
    done = vestwatch("dataset", "export", "-c", str(config), "--since", date.today().isoformat(), "--out", str(dataset))
    assert done.returncode == 0, done.stderr
    spec = yaml.safe_load((dataset / "site.yaml").read_text())
    assert spec["names"] == list(load_model(SHIPPED["weights"]).names), "the model's classes, in its order"
    rows = list(csv.DictReader((dataset / "sources.csv").open()))
    kinds = [row["kind"] for row in rows]
    assert kinds.count("confirmed") == 1 and kinds.count("false_alarm") == 1 and kinds.count("missed") == 1, kinds
    assert kinds.count("sample") >= 5, "a frame with people every second of the 7 s they are in view"
    assert {row["split"] for row in rows if row["kind"] != "missed"} == {"train", "val"}
    for row in rows:
        assert cv2.imread(str(dataset / row["image"])) is not None, row
    vest, no_vest = spec["names"].index("vest"), spec["names"].index("no_vest")
    confirmed, false_alarm = (labels_of(dataset, e) for e in verdicts)
    assert any(row[0] == no_vest for row in confirmed), "a confirmed violation keeps the model's no_vest"
    assert not any(row[0] == no_vest for row in false_alarm), "a false alarm's no_vest on the person is gone"
    assert any(row[0] == vest for row in false_alarm), "turned into a vest"
    assert "to_label/" in (dataset / "README.md").read_text()


def test_a_fine_tune_from_the_shipped_weights_is_promoted_over_a_worse_model_and_rolled_back(
    site, tmp_path: Path
) -> None:
    config, _ = site
    dataset = tmp_path / "site"
    assert vestwatch("dataset", "export", "-c", str(config), "--since", date.today().isoformat(),
                     "--out", str(dataset)).returncode == 0  # fmt: skip
    run = tmp_path / "run"
    trained = vestwatch("train", "--weights", str(SHIPPED["weights"]), "--data", str(dataset / "site.yaml"),
                        "--epochs", "1", "--img", "320", "--batch", "4", "--device", "cpu", "--workers", "0",
                        "--out", str(run))  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    tuned = run / "best.safetensors"
    assert list(load_model(tuned).names) == list(load_model(SHIPPED["weights"]).names), "the class list kept"

    worse = load_model(SHIPPED["weights"])
    with torch.no_grad():
        for parameter in worse.model[-1].parameters():  # the detection head blinded: it finds nothing
            parameter.zero_()
    save_weights(worse, tmp_path / "worse.safetensors")
    text = config.read_text().replace(str(SHIPPED["weights"]), str(tmp_path / "worse.safetensors"))
    config.write_text(text)
    promote = ["model", "promote", str(tuned), "--data", str(dataset / "site.yaml"), "--public", str(PUBLIC),
               "--public-images", "6", "--min-val-images", "1", "--img", "320", "--device", "cpu",
               "-c", str(config)]  # fmt: skip
    done = vestwatch(*promote)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "promoted" in done.stdout and "not running" in done.stdout, done.stdout
    settings = load_settings(Settings, config)
    promoted = settings.detector.weights
    assert promoted.parent == settings.recordings_dir / "models" and promoted.read_bytes() == tuned.read_bytes()
    assert '[[streams]]\nid = "yard"' in config.read_text(), "the rest of the file kept"

    again = vestwatch(*promote)
    assert again.returncode == 1 and "not promoted: no better" in again.stdout, again.stdout + again.stderr
    assert load_settings(Settings, config).detector.weights == promoted

    back = vestwatch("model", "rollback", "-c", str(config))
    assert back.returncode == 0, back.stderr
    assert load_settings(Settings, config).detector.weights == tmp_path / "worse.safetensors"
    history = (settings.recordings_dir / "models" / "history.jsonl").read_text().splitlines()
    assert [next(iter(json.loads(line).keys() & {"promoted", "rolled_back"})) for line in history] == [
        "promoted",
        "rolled_back",
    ]
