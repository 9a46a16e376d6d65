"""Deterministic test clips made of real workers: dataset crops pasted on a background, moving.

Daemon tests need footage whose right answer is known: who is in view, when, and whether they
wear a vest. Real footage never says so exactly, and synthetic shapes mean nothing to the shipped
model. So a clip here is a plain (or blurred) background with crops of labelled workers from
``../shared/datasets/construction-site-safety`` moving over it in straight lines; the same
arguments always give the same frames. The pictures are read at run time and never copied
into the repository: callers skip when :func:`dataset` returns None.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from pathlib import Path

import cv2
import numpy as np

DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "construction-site-safety"
FPS = 10
MARGIN = 0.04  # of the person box, each side, kept around a crop


@dataclass(frozen=True)
class Crop:
    """One labelled worker: a ``Person`` box (pixels of the 640x640 picture) of a dataset image."""

    image: str  # "split/file name"
    box: tuple[int, int, int, int]  # x1, y1, x2, y2
    vest: bool  # the worker's label: a Safety Vest (True) or a NO-Safety Vest box on them

    def pixels(self) -> tuple[np.ndarray, int, int]:
        """The worker with a little of their picture around them (the model wants some context),
        and where the person box's top-left corner lies in it."""
        picture = _picture(self.image)
        x1, y1, x2, y2 = self.box
        dx, dy = round((x2 - x1) * MARGIN), round((y2 - y1) * MARGIN)
        left, top = max(0, x1 - dx), max(0, y1 - dy)
        h, w = picture.shape[:2]
        return picture[top : min(h, y2 + dy), left : min(w, x2 + dx)], x1 - left, y1 - top


# Chosen by hand with the shipped model (weights/vestwatch-yolov7-tiny.safetensors, img 640, conf
# 0.25, CPU). The valid and test splits (not augmented) were searched for whole, upright Person
# boxes at least 200 px tall, clear of the picture's edges and of other people, holding exactly one
# Safety Vest or NO-Safety Vest box: 11 without a vest, 17 with. Each was walked alone across the
# plain 640x360 background (bottom centre from (60, 340) to (580, 340)) and kept only if a no_vest
# (vest) box lay on the pasted worker in every frame or all but one, never the opposite class, and a
# person box in every frame. Frames with the right box, at 220 px tall over 12 frames, then 180 and
# 240 px over 30, then 220 px over 30 on the blurred SITE_BACKDROP:
#   NO_VEST_JACKET   12/12 30/30 30/30 30/30     VEST_YELLOW  12/12 30/30 30/30 30/30
#   NO_VEST_CAMO     12/12 30/30 30/30 27/30     VEST_ORANGE  12/12 30/30 30/30 30/30
#   NO_VEST_HARNESS  12/12 29/30 30/30 30/30     VEST_MASKED  12/12 30/30 30/30 30/30
# Rejected: no_vest found too rarely on -1429- (4/12), 005559 (0/12), 681 (11/30 at 180 px),
# youtube-118 (7/12), youtube-308 (11/12), NX_img_177 (1/12), 002551 (0/30 at 180 px, vest at 240);
# vest workers also or only seen as no_vest: youtube-504, 004063, 2008_008320; 2009_003991 is a
# child on a chair. Eleven more vest workers passed the 12-frame walk; three are enough.
NO_VEST_JACKET = Crop("valid/-1989-_png_jpg.rf.8cb3d6087bb86d08e693b4250fbf96e3.jpg", (206, 171, 374, 561), False)
NO_VEST_CAMO = Crop("valid/-1079-_png_jpg.rf.19092a3937930012f9fd9c1ce57f5a7b.jpg", (382, 314, 454, 521), False)
NO_VEST_HARNESS = Crop("valid/004424_jpg.rf.0470713b945b08839105cde711db62d9.jpg", (95, 52, 264, 576), False)
VEST_YELLOW = Crop("valid/youtube-584_jpg.rf.3136186a0786384c1ffc261f4d40ea42.jpg", (76, 146, 254, 632), True)
VEST_ORANGE = Crop("valid/ppe_0355_jpg.rf.508753d5b708536eca53de192b927c61.jpg", (278, 264, 342, 608), True)
VEST_MASKED = Crop("test/image_55_jpg.rf.27ae4341a9b9647d73a8929ff7a22369.jpg", (143, 82, 320, 633), True)
# a site picture with machinery and no people, for ``background(blurred=...)``
SITE_BACKDROP = "valid/construction-1027-_jpg.rf.e78f55761814a8726ea51993407957af.jpg"


@dataclass
class Walker:
    """A worker moving in a straight line from ``start`` to ``end`` (bottom centre, frame pixels)
    over frames ``first``..``last``, ``height`` pixels tall; absent before and after.

    ``switch`` maps a frame number to the crop shown from it on, at the same place: a worker who
    puts a vest on."""

    crop: Crop
    start: tuple[float, float]
    end: tuple[float, float]
    first: int
    last: int
    height: int = 220
    switch: dict[int, Crop] = field(default_factory=dict)

    def at(self, frame: int) -> tuple[Crop, float, float] | None:
        """The crop and its bottom centre on ``frame``; None when the worker is not in view."""
        if not self.first <= frame <= self.last:
            return None
        t = (frame - self.first) / max(1, self.last - self.first)
        x = self.start[0] + (self.end[0] - self.start[0]) * t
        y = self.start[1] + (self.end[1] - self.start[1]) * t
        crop = self.crop
        for since in sorted(self.switch):
            if frame >= since:
                crop = self.switch[since]
        return crop, x, y


def dataset() -> Path | None:
    """The dataset folder, or None where this checkout has no ``../shared`` copy of it."""
    return DATASET if (DATASET / "data.yaml").is_file() else None


@cache
def _picture(image: str) -> np.ndarray:
    """A dataset picture, read once per process (a clip pastes the same crops hundreds of times)."""
    split, name = image.split("/")
    picture = cv2.imread(str(DATASET / split / "images" / name))
    if picture is None:
        raise FileNotFoundError(f"{DATASET / split / 'images' / name}: not readable")
    picture.flags.writeable = False  # shared by every caller
    return picture


def background(width: int = 640, height: int = 360, blurred: str | None = None) -> np.ndarray:
    """A calm backdrop: a soft grey gradient, or the dataset picture ``blurred`` (split/name) out of focus.

    Plain keeps the model's attention on the pasted workers; a blurred site gives real colours."""
    if blurred:
        picture = cv2.resize(_picture(blurred), (width, height), interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(picture, (0, 0), sigmaX=width / 40)
    ramp = np.linspace(150, 110, height, dtype=np.float32)[:, None, None]
    tint = np.array([1.0, 1.0, 0.95], np.float32)  # a touch warmer than neutral, like daylight
    return np.broadcast_to(ramp * tint, (height, width, 3)).astype(np.uint8).copy()


def paste(frame: np.ndarray, crop: Crop, x: float, y: float, height: int) -> tuple[int, int, int, int] | None:
    """Paste ``crop`` scaled to ``height`` (the person, margin excluded) with its box's bottom centre at
    (x, y), clipped to the frame. Returns the person's box (unclipped: it may reach past the frame's
    edge), or None when the crop lies wholly outside."""
    pixels, ox, oy = crop.pixels()
    bx1, by1, bx2, by2 = crop.box
    scale = height / (by2 - by1)
    size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
    scaled = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    pw, ph = (bx2 - bx1) * scale, (by2 - by1) * scale
    ox, oy = ox * scale, oy * scale
    left, top = round(x - pw / 2 - ox), round(y - ph - oy)
    fh, fw = frame.shape[:2]
    x1, y1 = max(0, left), max(0, top)
    x2, y2 = min(fw, left + size[0]), min(fh, top + size[1])
    if x1 >= x2 or y1 >= y2:
        return None
    frame[y1:y2, x1:x2] = scaled[y1 - top : y2 - top, x1 - left : x2 - left]
    return round(x - pw / 2), round(y - ph), round(x + pw / 2), round(y)


def compose(
    walkers: Sequence[Walker], frames: int, width: int = 640, height: int = 360, blurred: str | None = None
) -> Iterator[np.ndarray]:
    """``frames`` BGR frames: the background with each walker in view pasted in list order."""
    backdrop = background(width, height, blurred)
    for i in range(frames):
        frame = backdrop.copy()
        for walker in walkers:
            placed = walker.at(i)
            if placed is not None:
                paste(frame, placed[0], placed[1], placed[2], walker.height)
        yield frame


def write_clip(
    path: Path,
    walkers: Sequence[Walker],
    frames: int,
    fps: int = FPS,
    width: int = 640,
    height: int = 360,
    blurred: str | None = None,
) -> Path:
    """The composed clip as H.264 MP4 at ``fps`` (frame ``i`` at ``i / fps`` s): ``path``."""
    from stages.media.video import VideoWriter  # the project's own writer, as the daemon's files are made

    with VideoWriter(path, Fraction(fps)) as writer:
        for frame in compose(walkers, frames, width, height, blurred):
            writer.write(frame)
    return path
