"""PyTorch and ONNX Runtime give the same detections; every known ONNX layout is recognised."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from pipeline.detections import Detections
from stages.detector.backends import onnx_providers, resolve_device
from stages.detector.checkpoints import load_model
from stages.detector.detector import Thresholds, load_detector
from stages.detector.export import export_onnx
from stages.detector.layouts import Layout, LayoutError
from stages.detector.model import load_cfg
from tests.conftest import TEST_NAMES, scene
from tests.matching import box_iou

IMG = 320
THRESHOLDS = Thresholds(conf=0.3, iou=0.45)


def assert_same_detections(expected: Detections, actual: Detections, iou: float = 0.99, score: float = 1e-3) -> None:
    assert len(expected) > 0, "the test model should detect something"
    assert len(actual) == len(expected)
    overlaps = box_iou(expected.xyxy, actual.xyxy)
    for i in range(len(expected)):
        same_class = np.where(actual.class_id == expected.class_id[i], overlaps[i], 0)
        j = int(same_class.argmax())
        assert same_class[j] > iou, f"box {i} has no match (best IoU {same_class[j]:.4f})"
        assert abs(actual.confidence[j] - expected.confidence[i]) < score


def export_with(module: nn.Module, path: Path, dynamic: bool = True, names: str | None = None) -> Path:
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch"}} if dynamic else None
    torch.onnx.export(
        module.eval(),
        (torch.zeros(1, 3, IMG, IMG),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["images"],
        output_names=["output"],
        dynamic_axes=axes,
    )
    if names:
        proto = onnx.load(str(path))
        proto.metadata_props.add(key="names", value=names)
        onnx.save(proto, str(path))
    return path


class AnchorFreeLayout(nn.Module):
    """Our model's predictions in the YOLOv8/11 output layout [B, 4 + nc, N] (no objectness)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pred = self.model(x)
        return torch.cat((pred[..., :4], pred[..., 5:] * pred[..., 4:5]), -1).transpose(1, 2)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [scene(640, 360, seed=1), scene(480, 640, seed=2)]


@pytest.fixture(scope="module")
def reference(tiny_weights: Path, images: list[np.ndarray]) -> list[Detections]:
    return load_detector(tiny_weights, "cpu", IMG, THRESHOLDS).detect(images).detections


def test_onnx_grid_export_matches_pytorch(tiny_weights, tmp_path, images, reference) -> None:
    path = export_onnx(load_model(tiny_weights), tmp_path / "grid.onnx", IMG)
    detector = load_detector(path, "cpu", IMG, THRESHOLDS)
    assert detector.backend.layout is Layout.YOLO
    assert detector.names == TEST_NAMES
    for expected, actual in zip(reference, detector.detect(images).detections):
        assert_same_detections(expected, actual)


def test_onnx_end2end_export_matches_pytorch(tiny_weights, tmp_path, images, reference) -> None:
    path = export_onnx(load_model(tiny_weights), tmp_path / "e2e.onnx", IMG, Layout.END2END, conf=0.3)
    detector = load_detector(path, "cpu", IMG, THRESHOLDS)
    assert detector.backend.layout is Layout.END2END
    for expected, actual in zip(reference, detector.detect(images).detections):
        assert_same_detections(expected, actual)


def test_onnx_raw_maps_without_the_grid_match_pytorch(tiny_weights, tmp_path, images, reference) -> None:
    path = export_onnx(load_model(tiny_weights), tmp_path / "raw.onnx", IMG, Layout.RAW)
    outputs = [o.type.tensor_type.shape.dim for o in onnx.load(str(path)).graph.output]
    assert [len(dims) for dims in outputs] == [5, 5, 5], "one undecoded map per level"
    detector = load_detector(path, "cpu", IMG, THRESHOLDS)
    assert detector.backend.anchors == load_cfg("yolov7-tiny")["anchors"] and detector.names == TEST_NAMES
    for expected, actual in zip(reference, detector.detect(images).detections):
        assert_same_detections(expected, actual)


def test_raw_maps_without_anchors_in_the_file_need_them_from_config(tiny_weights, tmp_path, images, reference) -> None:
    """As the official export.py writes them: the anchors differ per cfg and are not in the file."""
    path = export_onnx(load_model(tiny_weights), tmp_path / "raw.onnx", IMG, Layout.RAW)
    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != "anchors"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(path))
    with pytest.raises(LayoutError, match=r"raw.onnx: output maps .* set detector.anchors .*yolov7-tiny: \[\[10, 13"):
        load_detector(path, "cpu", IMG)
    with pytest.raises(LayoutError, match=r"do not fit output maps"):
        load_detector(path, "cpu", IMG, anchors=[[10, 13, 16, 30]])
    anchors = load_cfg("yolov7-tiny")["anchors"]
    for expected, actual in zip(
        reference, load_detector(path, "cpu", IMG, THRESHOLDS, anchors=anchors).detect(images).detections
    ):
        assert_same_detections(expected, actual)


def test_anchor_free_layout_with_ultralytics_names(tiny_weights, tmp_path, images, reference) -> None:
    names = "{0: 'vest', 1: 'no_vest', 2: 'person'}"  # how Ultralytics stores names
    path = export_with(AnchorFreeLayout(load_model(tiny_weights).fuse()), tmp_path / "v8.onnx", names=names)
    detector = load_detector(path, "cpu", IMG, THRESHOLDS)
    assert detector.backend.layout is Layout.ANCHOR_FREE
    assert detector.names == TEST_NAMES
    for expected, actual in zip(reference, detector.detect(images).detections):
        assert_same_detections(expected, actual)


def test_static_single_batch_export_like_yolov5(tiny_weights, tmp_path, images) -> None:
    """A fixed 1x3x320x320 graph: every image is letterboxed square and run one by one."""
    path = export_with(load_model(tiny_weights).fuse(), tmp_path / "static.onnx", dynamic=False)
    onnx_detector = load_detector(path, "cpu", 640, THRESHOLDS)  # the graph's size wins over img_size
    assert onnx_detector.backend.fixed_shape == (IMG, IMG)
    assert onnx_detector.names == ["0", "1", "2"]  # no names in the file
    result = onnx_detector.detect(images)
    assert result.input_shape == (IMG, IMG)
    torch_detector = load_detector(tiny_weights, "cpu", IMG, THRESHOLDS)
    for image, actual in zip(images, result.detections):
        from stages.detector.letterbox import letterbox

        square, _, _ = letterbox(image, IMG, auto=False)
        assert square.shape[:2] == (IMG, IMG)
        torch_detector.backend.fixed_shape = (IMG, IMG)
        expected = torch_detector.detect([image]).detections[0]
        assert_same_detections(expected, actual)


def test_unknown_layout_is_refused_with_its_shapes(tmp_path) -> None:
    class Classifier(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean((2, 3))

    path = export_with(Classifier(), tmp_path / "classifier.onnx")
    with pytest.raises(LayoutError, match=r"unknown output layout .*\[1, 3\]"):
        load_detector(path, "cpu", IMG)


def test_device_names_are_checked() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="expected cpu, cuda, cuda:N or auto"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_onnx_runtime_takes_the_best_provider_installed() -> None:
    cuda, cpu = torch.device("cuda:1"), torch.device("cpu")
    every = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    names = [p if isinstance(p, str) else p[0] for p in onnx_providers(cuda, every)]
    assert names == every, "TensorRT, then CUDA, then the CPU"
    assert onnx_providers(cuda, every)[0][1]["device_id"] == 1
    assert [p if isinstance(p, str) else p[0] for p in onnx_providers(cuda, every[1:])] == every[1:]
    assert onnx_providers(cuda, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"], "onnxruntime without CUDA"
    assert onnx_providers(cpu, every) == ["CPUExecutionProvider"]
