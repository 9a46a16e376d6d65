"""``vestwatch dataset export``: the site's own dataset, from what the reviewers said.

From the frames the stream stages kept (``stages.recording.learning``) since a day:

- a **confirmed** violation's frame, labelled with the model's boxes (it was right);
- a **false alarm**'s frame, a hard negative: the model's boxes, corrected: on the person of the event,
  each ``no_<item>`` box the event was about becomes ``<item>`` (the reviewer said they wore it);
- the **samples** (a frame with people now and then), labelled with the model's boxes: pre-labels,
  marked so in ``sources.csv``, to be checked by a person when there is time;
- each **missed violation** a reviewer marked on a recording, as a frame to label by hand in
  ``to_label/`` (the model saw nothing to label it with), not in the splits.

Frames ``[privacy]`` blurred are left out (a model would learn pixelated blobs), and said. The held-out
``val`` split holds judged frames only (a sample's labels are the current model's own boxes: scoring it
on them would favour it), chosen by each picture's name, so that it is stable across exports.
Written in the YOLO layout ``vestwatch train --data DIR/site.yaml`` reads, the model's class names in
its order (so that a fine-tune keeps them), ``sources.csv`` (where each picture came from) and a README.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from stages.config import Settings
from stages.media.video import VideoReader
from stages.recording.clips import cut_clip
from stages.recording.eventstore import EventStore
from stages.recording.learning import kept_frames
from stages.recording.paths import stream_folder
from stages.stream.processors.people import ON, coverage

log = logging.getLogger(__name__)

VAL_SHARE = 0.2
MIN_SCORE = 0.35  # the model's boxes below this are left out of the labels: a wrong label teaches harm
README = """# Site dataset of {site}, exported {made}

Frames kept by vestwatch since {since} (see `sources.csv`, a line per picture: its split, its kind, the
camera, the time, the event and what its labels are):

- `confirmed` ({confirmed}): violations a reviewer confirmed; labels: the model's boxes.
- `false_alarm` ({false_alarm}): hard negatives; labels: the model's boxes with the person's `no_<item>`
  box the alarm was about turned into `<item>`.
- `sample` ({sample}): frames with people, labels: the model's boxes (pre-labels: check them by hand).
- left out ({blurred}): frames blurred by `[privacy]`.
- `to_label/` ({missed}): moments a reviewer marked as a missed violation; no labels (the model saw none):
  label them by hand (YOLO rows `class cx cy w h`, classes as in `site.yaml`) and move them into
  `images/train` and `labels/train`. {drawn}

Boxes scored under {min_score} are not labels. `val` (about {val_share:.0%} of the judged frames, none of the
samples: their labels are the model's own) is held out by each picture's name: fine-tune with
`vestwatch train --weights <current> --data {out}/site.yaml`, compare with
`vestwatch val --data {out}/site.yaml --split val`, and `vestwatch model promote` the better one.
"""


@dataclass
class Exported:
    rows: list[dict[str, Any]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    missed: int = 0
    blurred: int = 0  # kept frames left out: [privacy] blurred them
    drawn: int = 0  # missed moments from a drawn recording: its boxes are drawn on the picture


def _labels(line: dict[str, Any], names: list[str], verdict: str | None) -> list[str]:
    """YOLO rows of a kept frame's boxes (our class ids by name), corrected for a false alarm."""
    boxes = [dict(d) for d in line["detections"] if d["score"] >= MIN_SCORE and d["class_name"] in names]
    if verdict == "false_alarm" and line.get("box"):
        person = np.array(line["box"], np.float64)
        for missing in line.get("missing", []):
            for detection in boxes:
                on = coverage(np.array(detection["box"]), person)[0, 0] >= ON
                if detection["class_name"] == f"no_{missing}" and on and missing in names:
                    detection["class_name"] = missing
    rows = []
    for detection in boxes:
        w, h = line["width"], line["height"]
        x1, y1, x2, y2 = (min(max(v, 0), side) for v, side in zip(detection["box"], (w, h, w, h)))
        cx, cy = min(max((x1 + x2) / 2 / w, 0), 1), min(max((y1 + y2) / 2 / h, 0), 1)
        bw, bh = min((x2 - x1) / w, 1), min((y2 - y1) / h, 1)
        if bw > 0 and bh > 0:
            rows.append(f"{names.index(detection['class_name'])} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
    return rows


def _split(name: str) -> str:
    return "val" if hashlib.sha1(name.encode()).digest()[0] < 256 * VAL_SHARE else "train"


def export(settings: Settings, since: float, out: Path) -> Exported:
    """Write the site dataset of the frames kept from ``since`` into ``out`` (made, or emptied of a
    previous export's folders)."""
    store = EventStore(settings.events_db)
    try:
        judged = "SELECT event_id, verdict FROM events WHERE started >= ? AND verdict IS NOT NULL"
        verdicts = {row["event_id"]: row["verdict"] for row in store.query(judged, [since - 60])}
        missed = store.query("SELECT stream, at FROM missed WHERE at >= ? ORDER BY at", [since])
    finally:
        store.close()
    for folder in ("images", "labels", "to_label"):
        shutil.rmtree(out / folder, ignore_errors=True)
    done = Exported()
    for picture, line in kept_frames(settings.recordings_dir, since):
        done.names = done.names or list(line["names"])
        verdict = verdicts.get(line.get("event_id", ""))
        if line.get("event_id") and verdict is None:
            continue  # an event nobody judged says nothing yet
        if line.get("blurred"):
            done.blurred += 1
            continue
        name = f"{line['stream']}-{picture.stem}"
        split = _split(name) if verdict else "train"
        for kind in ("images", "labels"):
            (out / kind / split).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(picture, out / "images" / split / f"{name}.jpg")
        (out / "labels" / split / f"{name}.txt").write_text(
            "".join(f"{row}\n" for row in _labels(line, done.names, verdict))
        )
        done.rows.append({"image": f"images/{split}/{name}.jpg", "split": split, "kind": verdict or "sample",
                          "stream": line["stream"], "time": datetime.fromtimestamp(line["clock"]).isoformat(),
                          "event_id": line.get("event_id", ""),
                          "labels": "model, corrected" if verdict == "false_alarm" else "model"})  # fmt: skip
    _hold_one_out(out, done)
    for row in missed:
        _missed_frame(settings, row["stream"], row["at"], out / "to_label", done)
    _describe(settings, since, out, done)
    return done


def _hold_one_out(out: Path, done: Exported) -> None:
    """With two judged pictures or more, at least one in ``val``: a held-out split of none compares nothing."""
    judged = [row for row in done.rows if row["kind"] != "sample"]
    if len(judged) < 2 or any(row["split"] == "val" for row in judged):
        return
    row = judged[-1]
    stem = Path(row["image"]).stem
    for kind, suffix in (("images", ".jpg"), ("labels", ".txt")):
        (out / kind / "val").mkdir(parents=True, exist_ok=True)
        (out / kind / "train" / f"{stem}{suffix}").rename(out / kind / "val" / f"{stem}{suffix}")
    row["split"], row["image"] = "val", f"images/val/{stem}.jpg"


def _missed_frame(settings: Settings, stream: str, at: float, folder: Path, done: Exported) -> None:
    """The recording's frame at ``at`` into ``folder``; said and skipped when retention took it."""
    with tempfile.TemporaryDirectory() as scratch:
        clip = cut_clip(stream_folder(settings.recordings_dir, stream), at, at + 0.5, Path(scratch) / "cut.mp4")
        if clip is None:
            log.warning("%s at %s: missed violation not exported: no recording there any more", stream, at)
            return
        with VideoReader(clip.path) as reader:
            frames = [(abs(clip.start + (frame.pts_s or 0.0) - at), frame.image) for frame in reader.frames()]
    if not frames:
        log.warning("%s at %s: missed violation not exported: its recording does not decode there", stream, at)
        return
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{stream}-missed-{int(at * 1000)}.jpg"
    cv2.imwrite(str(folder / name), min(frames, key=lambda found: found[0])[1])
    done.missed += 1
    configured = next((s for s in settings.streams if s.id == stream), None)
    done.drawn += configured is not None and not settings.copies_packets(configured)
    done.rows.append({"image": f"to_label/{name}", "split": "", "kind": "missed", "stream": stream,
                      "time": datetime.fromtimestamp(at).isoformat(), "event_id": "", "labels": "none"})  # fmt: skip


def _describe(settings: Settings, since: float, out: Path, done: Exported) -> None:
    out.mkdir(parents=True, exist_ok=True)
    spec = {"path": str(out.resolve()), "train": "images/train", "val": "images/val", "names": done.names}
    (out / "site.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    with (out / "sources.csv").open("w", newline="") as sources:
        writer = csv.DictWriter(sources, ["image", "split", "kind", "stream", "time", "event_id", "labels"])
        writer.writeheader()
        writer.writerows(done.rows)
    kinds = {kind: sum(row["kind"] == kind for row in done.rows) for kind in ("confirmed", "false_alarm", "sample")}
    drawn = f"{done.drawn} of them come from a drawn recording: its boxes are on the picture." if done.drawn else ""
    made, day = datetime.now().isoformat(timespec="seconds"), datetime.fromtimestamp(since).date()
    said = README.format(site=settings.site, made=made, since=day, missed=done.missed, drawn=drawn,
                         blurred=done.blurred, min_score=MIN_SCORE, val_share=VAL_SHARE, out=out, **kinds)  # fmt: skip
    (out / "README.md").write_text(said)
    log.info("site dataset: %s", json.dumps({**kinds, "missed": done.missed, "left out, blurred": done.blurred}))
