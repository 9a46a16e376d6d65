"""CUDA graphs: padding to recorded batch sizes, replays that never alias, the limits. On the CPU
the same class runs its buffers eagerly; on a GPU the last test compares real graphs with eager."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stages.capture.sources.demo import demo_pictures
from stages.config import BUNDLED_WEIGHTS
from stages.detector.backends import TorchBackend
from stages.detector.detector import load_detector
from stages.detector.graphs import BUCKETS, MAX_GRAPHS, GraphedModel, bucket


def test_batches_pad_to_the_next_recorded_size() -> None:
    assert [bucket(n) for n in (1, 2, 3, 5, 9, 17, 256)] == [1, 2, 4, 8, 16, 32, 256]
    assert bucket(BUCKETS[-1] + 1) is None


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()


@torch.inference_mode()
def test_replays_equal_the_model_and_never_alias() -> None:
    net = small_net()
    graphed = GraphedModel(net)
    first, second = torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16)
    graphed(first)  # seen once: eager, nothing recorded
    assert not graphed.recorded
    from_replay = graphed(first)  # recorded at batch 4, replayed
    assert list(graphed.recorded) == [(4, (3, 16, 16), torch.float32)]
    graphed(second)  # the same graph replayed on other frames
    torch.testing.assert_close(from_replay, net(first))  # ...left the earlier result alone
    torch.testing.assert_close(graphed(second[:1]), net(second[:1]))  # batch 1: eager, then recorded
    torch.testing.assert_close(graphed(second[:1]), net(second[:1]))


@torch.inference_mode()
def test_recorded_shapes_are_bounded_and_huge_batches_run_eagerly() -> None:
    net = small_net()
    graphed = GraphedModel(net)
    for size in range(MAX_GRAPHS + 3):
        x = torch.rand(1, 3, 8, 8 + size)
        graphed(x)
        torch.testing.assert_close(graphed(x), net(x))
    assert len(graphed.recorded) == MAX_GRAPHS
    huge = torch.rand(BUCKETS[-1] + 1, 3, 4, 4)
    for _ in range(2):
        torch.testing.assert_close(graphed(huge), net(huge))
    assert len(graphed.recorded) == MAX_GRAPHS


@torch.inference_mode()
def test_channels_last_input_keeps_its_layout() -> None:
    graphed = GraphedModel(small_net())
    x = torch.rand(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    graphed(x), graphed(x)
    (recorded,) = graphed.recorded.values()
    assert recorded.static_in.is_contiguous(memory_format=torch.channels_last)


def test_shipped_model_through_padded_buffers_finds_the_same_boxes() -> None:
    """The CPU twin of the GPU test: the fused model behind GraphedModel's buffers, batch 3 padded to 4."""
    pictures = demo_pictures()[:3]
    eager = load_detector(BUNDLED_WEIGHTS, "cpu", 640)
    graphed = load_detector(BUNDLED_WEIGHTS, "cpu", 640)
    graphed.backend = TorchBackend.load(BUNDLED_WEIGHTS, torch.device("cpu"), graphs=True)
    expected = eager.detect(pictures).detections
    for _ in range(2):  # eager, then recorded and replayed
        found = graphed.detect(pictures).detections
    assert graphed.backend.run.recorded
    for ours, theirs in zip(found, expected, strict=True):
        assert list(ours.class_id) == list(theirs.class_id)
        torch.testing.assert_close(torch.from_numpy(ours.xyxy), torch.from_numpy(theirs.xyxy), atol=0.05, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
def test_cuda_graphs_find_what_the_eager_model_finds() -> None:
    pictures = demo_pictures()[:3]
    eager = load_detector(BUNDLED_WEIGHTS, "cuda", 640, cuda_graphs=False).detect(pictures).detections
    detector = load_detector(BUNDLED_WEIGHTS, "cuda", 640, cuda_graphs=True)
    for _ in range(3):
        found = detector.detect(pictures).detections
    assert detector.backend.run.recorded and not detector.backend.run.failed
    for ours, theirs in zip(found, eager, strict=True):
        assert list(ours.class_id) == list(theirs.class_id)
        torch.testing.assert_close(torch.from_numpy(ours.xyxy), torch.from_numpy(theirs.xyxy), atol=0.5, rtol=0)
