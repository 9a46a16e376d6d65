import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from pipeline.frames import FrameRing, RingCursor, RingReaders, pack_pixels, unpack_pixels


def frame(value: int, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    return np.full((*shape, 3), value % 256, np.uint8)


def test_write_then_read_in_another_mapping(tmp_path: Path) -> None:
    writer = FrameRing.create(tmp_path / "ring", slots=4, max_shape=(48, 64, 3))
    slot = writer.write(7, frame(7), pts=1.5, captured=100.0)
    read = FrameRing.open(tmp_path / "ring").read(slot, 7)
    assert read is not None and read.pts == 1.5 and read.captured == 100.0
    np.testing.assert_array_equal(read.image, frame(7))


def test_overwritten_slot_is_reported_not_returned(tmp_path: Path) -> None:
    ring = FrameRing.create(tmp_path / "ring", slots=4, max_shape=(48, 64, 3))
    slot = ring.write(1, frame(1), None, 0.0)
    ring.write(5, frame(5), None, 0.0)  # same slot, 4 later
    reader = FrameRing.open(tmp_path / "ring")
    assert reader.read(slot, 1) is None
    assert reader.read(slot, 5).pts is None


def test_frames_of_other_sizes_fit_below_the_maximum(tmp_path: Path) -> None:
    ring = FrameRing.create(tmp_path / "ring", slots=2, max_shape=(48, 64, 3))
    slot = ring.write(3, frame(3, (20, 30)), None, 0.0)
    assert ring.read(slot, 3).image.shape == (20, 30, 3)


def _write_frames(path: str, count: int) -> None:
    ring = FrameRing.create(Path(path), slots=2, max_shape=(240, 320, 3))  # takes over the existing ring
    for seq in range(1, count):
        ring.write(seq, frame(seq, (240, 320)), None, float(seq))


def test_concurrent_writer_never_yields_a_torn_frame(tmp_path: Path) -> None:
    """A reader racing a writer in another process gets whole frames or None, never a mix."""
    path = tmp_path / "ring"
    FrameRing.create(path, slots=2, max_shape=(240, 320, 3))
    writer = multiprocessing.get_context("spawn").Process(target=_write_frames, args=(str(path), 3000))
    writer.start()
    reader = FrameRing.open(path)
    whole = torn_checked = 0
    while writer.is_alive() or torn_checked == 0:
        for seq in range(1, 3000):
            got = reader.read(seq % 2, seq)
            torn_checked += 1
            if got is not None:
                assert (got.image == seq % 256).all(), f"frame {seq} mixes pixels of two frames"
                whole += 1
        if not writer.is_alive():
            break
    writer.join()
    assert whole > 0


def test_ring_readers_miss_until_the_writer_creates_the_ring(tmp_path: Path) -> None:
    readers = RingReaders()
    path = tmp_path / "ring"
    assert readers.read(path, 0, 4) is None  # no writer yet: a miss, not an error
    writer = FrameRing.create(path, slots=4, max_shape=(48, 64, 3))
    slot = writer.write(4, frame(4), None, 1.0)
    np.testing.assert_array_equal(readers.read(path, slot, 4).image, frame(4))
    FrameRing.create(path, slots=4, max_shape=(48, 64, 3)).write(8, frame(8), None, 2.0)  # a restarted writer
    assert readers.read(path, slot, 8).captured == 2.0  # the kept mapping sees the same file
    readers.close()


def test_inline_pixels_round_trip_raw_exactly_and_jpeg_closely() -> None:
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    image[:, :32] = (0, 120, 255)  # some flat area, as real frames have
    np.testing.assert_array_equal(unpack_pixels(*pack_pixels(image, None)), image)
    data, form, shape = pack_pixels(image, 90)
    assert form == "jpeg" and len(data) < image.nbytes
    assert np.abs(unpack_pixels(data, form, shape)[:, :28].astype(int) - image[:, :28]).mean() < 3


@pytest.mark.parametrize(
    ("data", "form", "shape", "message"),
    [
        (b"\x00" * 10, "bgr", [48, 64, 3], "10 bytes do not make a 'bgr' frame"),
        (b"\xff\xd8garbage", "jpeg", [48, 64, 3], "not a decodable JPEG"),
        (b"\x00" * 12, "png", [2, 2, 3], "'png'"),
    ],
)
def test_bad_inline_pixels_are_named(data: bytes, form: str, shape: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        unpack_pixels(data, form, shape)


def test_a_ring_cursor_tells_the_writer_how_far_its_reader_has_got(tmp_path: Path) -> None:
    writer_side = RingCursor(tmp_path / "ring.recorded")
    assert writer_side.get() is None, "no reader yet: nothing to wait for"
    reader = RingCursor.create(tmp_path / "ring.recorded", 5)
    assert writer_side.get() == 5
    reader.set(9)
    assert writer_side.get() == 9, "seen at once, through the shared mapping"
    reader.close()
    restarted = RingCursor.create(tmp_path / "ring.recorded", 3)  # a reader that started again takes it over
    assert writer_side.get() == 3
    restarted.close()
    writer_side.close()
