from pathlib import Path

import av
import numpy as np
import pytest

from stages.media.video import VideoReader, VideoWriter, yuv420p_frame


def test_reader_keeps_source_timestamps(make_video) -> None:
    with VideoReader(make_video(seconds=1, fps=25)) as reader:
        frames = list(reader.frames())
    assert len(frames) == 25
    assert [f.index for f in frames] == list(range(25))
    np.testing.assert_allclose([f.pts_s for f in frames], np.arange(25) / 25, atol=1e-3)
    assert frames[0].image.shape == (240, 320, 3)


def test_writer_output_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with VideoWriter(path, fps=10) as writer:
        for i in range(5):
            writer.write(np.full((121, 161, 3), i * 40, np.uint8))  # odd sides are trimmed to even
    with VideoReader(path) as reader:
        frames = list(reader.frames())
    assert len(frames) == 5 and frames[0].image.shape == (120, 160, 3)
    assert abs(int(frames[4].image.mean()) - 160) < 5


def test_truncated_video_raises_with_its_name(make_video, tmp_path: Path) -> None:
    source = make_video(seconds=2, fps=10)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(source.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"damaged\.mp4"), VideoReader(damaged) as reader:
        list(reader.frames())


def test_real_site_footage_decodes_with_timestamps(site_footage: Path) -> None:
    with VideoReader(site_footage) as reader:
        assert float(reader.fps) == pytest.approx(29.97, abs=0.01)
        frames = [f for _, f in zip(range(60), reader.frames())]
    assert frames[0].image.shape == (360, 640, 3)
    steps = np.diff([f.pts_s for f in frames])
    np.testing.assert_allclose(steps, 1 / 29.97, atol=2e-3)


COLOURS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 200, 255), (128, 128, 128), (30, 60, 90)]  # BGR


def test_colours_survive_the_writer_and_the_reader(tmp_path: Path) -> None:
    """OpenCV converts to and from yuv420p here; a wrong matrix, range or plane order shifts colours."""
    image = np.zeros((96, 96 * len(COLOURS), 3), np.uint8)
    for i, colour in enumerate(COLOURS):
        image[:, i * 96 : (i + 1) * 96] = colour
    path = tmp_path / "colours.mp4"
    with VideoWriter(path, fps=10, crf=0) as writer:
        writer.write(image)
    with VideoReader(path) as reader:
        decoded = next(reader.frames()).image.astype(int)
    for i, colour in enumerate(COLOURS):
        patch = decoded[16:80, i * 96 + 16 : (i + 1) * 96 - 16].reshape(-1, 3).mean(axis=0)
        np.testing.assert_allclose(patch, colour, atol=3, err_msg=f"patch {i}")


def test_opencv_conversion_equals_ffmpegs(site_footage: Path) -> None:
    """The fast path gives what swscale gives, within a grey level on average (chroma edges differ by
    interpolation only)."""
    with av.open(str(site_footage)) as container:
        image = next(container.decode(video=0)).to_ndarray(format="bgr24")
    ours = yuv420p_frame(image).to_ndarray().astype(int)
    ffmpegs = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p").to_ndarray().astype(int)
    assert np.abs(ours - ffmpegs).mean() < 1 and np.percentile(np.abs(ours - ffmpegs), 99) <= 3
