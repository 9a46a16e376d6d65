"""Shared-memory frame rings: pixels stay in memory; ZeroMQ carries only (slot, seq) references.

A ring is a file on tmpfs (``/dev/shm`` or the runtime dir) mapped by every process
that needs it; one writer owns it. Each slot holds a small header and the pixels:

    seq u64 | height u32 | width u32 | channels u32 | pts f64 | captured f64 | pixels ...

The writer marks a slot invalid (seq 0) before it writes and stamps the seq after,
so a reader that copies a slot checks the seq before and after: a changed seq means
the slot was overwritten, which is a counted drop, never a wrong frame.

>>> ring = FrameRing.create(path, slots=8, max_shape=(720, 1280, 3))
>>> slot = ring.write(seq=1, image=frame, pts=0.0, captured=time.time())
>>> FrameRing.open(path).read(slot, seq=1)   # SlotFrame or None

A reader that must not lose a frame (the recorder) tells the writer how far it has taken them out
of the ring with a ``RingCursor``: the writer waits before it overwrites a frame past the cursor.

Between hosts no ring is shared: ``pack_pixels`` puts the frame itself in the message.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MAGIC = b"VWRING01"
RING_HEADER = struct.Struct("<8sII")  # magic, slots, slot size in bytes
SLOT_HEADER = struct.Struct("<QIIIdd")
SLOT_PIXELS = 64  # pixels start at this offset in a slot, past the header


@dataclass(frozen=True)
class SlotFrame:
    image: np.ndarray
    pts: float | None
    captured: float


class FrameRing:
    def __init__(self, path: Path, buffer: mmap.mmap, slots: int, slot_bytes: int) -> None:
        self.path = path
        self.buffer = buffer
        self.slots = slots
        self.slot_bytes = slot_bytes
        self.array = np.frombuffer(buffer, dtype=np.uint8)

    @classmethod
    def create(cls, path: Path, slots: int, max_shape: tuple[int, int, int]) -> FrameRing:
        """Create, or take over after a restart, the ring at ``path`` (readers keep their mapping)."""
        slot_bytes = SLOT_PIXELS + int(np.prod(max_shape))
        size = RING_HEADER.size + slots * slot_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():  # planted: the writer owns this name, it never follows it
            path.unlink()
        fd = _open_regular(path, os.O_RDWR | os.O_CREAT)
        try:
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, size)
            buffer = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        RING_HEADER.pack_into(buffer, 0, MAGIC, slots, slot_bytes)
        ring = cls(path, buffer, slots, slot_bytes)
        for slot in range(slots):
            SLOT_HEADER.pack_into(buffer, ring._offset(slot), 0, 0, 0, 0, 0.0, 0.0)
        return ring

    @classmethod
    def open(cls, path: Path) -> FrameRing:
        fd = _open_regular(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            buffer = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        magic, slots, slot_bytes = RING_HEADER.unpack_from(buffer, 0)
        if magic != MAGIC or RING_HEADER.size + slots * slot_bytes > size:
            raise ValueError(f"{path}: not a frame ring")
        return cls(path, buffer, slots, slot_bytes)

    def _offset(self, slot: int) -> int:
        return RING_HEADER.size + slot * self.slot_bytes

    def write(self, seq: int, image: np.ndarray, pts: float | None, captured: float) -> int:
        """Store ``image`` in slot ``seq % slots``; returns the slot."""
        if seq <= 0:
            raise ValueError("ring sequence numbers start at 1")
        if image.nbytes > self.slot_bytes - SLOT_PIXELS:
            raise ValueError(f"frame of {image.shape} does not fit a ring slot of {self.slot_bytes} bytes")
        height, width = image.shape[:2]
        channels = image.shape[2] if image.ndim == 3 else 1
        slot = seq % self.slots
        offset = self._offset(slot)
        SLOT_HEADER.pack_into(self.buffer, offset, 0, 0, 0, 0, 0.0, 0.0)  # invalid while writing
        start = offset + SLOT_PIXELS
        self.array[start : start + image.nbytes] = image.reshape(-1)
        SLOT_HEADER.pack_into(
            self.buffer, offset, seq, height, width, channels, float("nan") if pts is None else pts, captured
        )
        return slot

    def newest_seq(self) -> int:
        """The newest frame's seq: how far the writer has got (0 before its first frame)."""
        return max(SLOT_HEADER.unpack_from(self.buffer, self._offset(slot))[0] for slot in range(self.slots))

    def shape(self, slot: int, seq: int) -> tuple[int, int] | None:
        """(height, width) of the frame ``seq`` in ``slot`` without copying it; None if overwritten."""
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} is outside the ring's 0-{self.slots - 1}")
        stamped, height, width, *_ = SLOT_HEADER.unpack_from(self.buffer, self._offset(slot))
        return (height, width) if stamped == seq else None

    def read(self, slot: int, seq: int) -> SlotFrame | None:
        """A copy of the frame ``seq`` in ``slot``, or None if it was overwritten.

        ValueError for a slot the ring does not have: a message that names one is malformed.
        """
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} is outside the ring's 0-{self.slots - 1}")
        offset = self._offset(slot)
        stamped, height, width, channels, pts, captured = SLOT_HEADER.unpack_from(self.buffer, offset)
        if stamped != seq or height * width * channels > self.slot_bytes - SLOT_PIXELS:
            return None
        start = offset + SLOT_PIXELS
        image = self.array[start : start + height * width * channels].copy().reshape(height, width, channels)
        if SLOT_HEADER.unpack_from(self.buffer, offset)[0] != seq:
            return None
        return SlotFrame(image, None if pts != pts else pts, captured)

    def close(self) -> None:
        self.array = None
        self.buffer.close()


def _open_regular(path: Path, flags: int) -> int:
    """A ring file's descriptor; a symlink or anything but a regular file planted in its place is
    refused (OSError), so a ring can never map another file."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path}: not a regular file")
    return fd


CURSOR = struct.Struct("<Q")


class RingCursor:
    """How far one reader has taken a ring's frames: a seq in a file beside the ring, written by the
    reader and read by the writer, so that the writer knows without a message (and at once) which of
    its slots it may overwrite. A cursor whose reader has not created it yet reads as None."""

    def __init__(self, path: Path) -> None:
        """The writer's view of the cursor at ``path``; the reader makes its own with ``create``."""
        self.path = path
        self.buffer: mmap.mmap | None = None

    @classmethod
    def create(cls, path: Path, seq: int) -> RingCursor:
        """The reader's cursor, taken over after a restart and set to ``seq``."""
        cursor = cls(path)
        if path.is_symlink():
            path.unlink()
        fd = _open_regular(path, os.O_RDWR | os.O_CREAT)
        try:
            if os.fstat(fd).st_size != CURSOR.size:
                os.ftruncate(fd, CURSOR.size)
            cursor.buffer = mmap.mmap(fd, CURSOR.size)
        finally:
            os.close(fd)
        cursor.set(seq)
        return cursor

    def set(self, seq: int) -> None:
        CURSOR.pack_into(self.buffer, 0, seq)

    def get(self) -> int | None:
        """The reader's seq; None while it has no cursor (it is not running, or not yet)."""
        if self.buffer is None:
            try:
                fd = _open_regular(self.path, os.O_RDONLY)
            except OSError:
                return None
            try:
                if os.fstat(fd).st_size < CURSOR.size:
                    return None
                self.buffer = mmap.mmap(fd, CURSOR.size, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
        return CURSOR.unpack_from(self.buffer, 0)[0]

    def close(self) -> None:
        if self.buffer is not None:
            self.buffer.close()
            self.buffer = None


class RingReaders:
    """The rings a reader stage needs, opened on first use and kept; a ring its writer has not
    created yet reads as a miss, like an overwritten slot."""

    def __init__(self) -> None:
        self.rings: dict[Path, FrameRing] = {}

    def read(self, path: Path, slot: int, seq: int) -> SlotFrame | None:
        ring = self._ring(path)
        return None if ring is None else ring.read(slot, seq)

    def shape(self, path: Path, slot: int, seq: int) -> tuple[int, int] | None:
        ring = self._ring(path)
        return None if ring is None else ring.shape(slot, seq)

    def newest_seq(self, path: Path) -> int:
        ring = self._ring(path)
        return 0 if ring is None else ring.newest_seq()

    def has_slot(self, path: Path, slot: int) -> bool:
        """Whether the ring has ``slot`` (True while it does not exist yet: nothing to check against)."""
        ring = self._ring(path)
        return ring is None or 0 <= slot < ring.slots

    def _ring(self, path: Path) -> FrameRing | None:
        ring = self.rings.get(path)
        if ring is None:
            try:
                ring = self.rings[path] = FrameRing.open(path)
            except (OSError, ValueError):
                return None
        return ring

    def close(self) -> None:
        for ring in self.rings.values():
            ring.close()


def pack_pixels(image: np.ndarray, jpeg_quality: int | None) -> tuple[bytes, str, list[int]]:
    """A frame for a message that crosses hosts, where no ring is shared: (bytes, format, shape).

    Raw BGR keeps every pixel; JPEG is about a tenth of the size, for slower links.
    """
    if jpeg_quality is None:
        return image.tobytes(), "bgr", list(image.shape)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise ValueError(f"cannot JPEG-encode a frame of {image.shape}")
    return encoded.tobytes(), "jpeg", list(image.shape)


def unpack_pixels(data: bytes, form: str, shape: list[int]) -> np.ndarray:
    """The frame ``pack_pixels`` packed; ValueError names what does not add up."""
    if form == "jpeg":
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("inline pixels: not a decodable JPEG")
    elif form == "bgr" and len(shape) == 3 and len(data) == int(np.prod(shape)):
        image = np.frombuffer(data, np.uint8).reshape(shape)
    else:
        raise ValueError(f"inline pixels: {len(data)} bytes do not make a {form!r} frame of shape {shape}")
    if list(image.shape) != list(shape):
        raise ValueError(f"inline pixels: decoded {list(image.shape)}, expected {shape}")
    return image
