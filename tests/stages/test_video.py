from pathlib import Path

import numpy as np
import pytest

from stages.video import VideoReader, VideoWriter


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
