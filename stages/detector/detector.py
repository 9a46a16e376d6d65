"""``Detector``: images in, ``Detections`` in source pixels out, whatever the weights' format.

>>> detector = load_detector("weights/model.safetensors", device="cpu")
>>> result = detector.detect([cv2.imread("site.jpg")])
>>> result.detections[0].counts(detector.names), result.inference_ms
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.detections import Detections
from stages.config import DetectorSettings
from stages.detector.backends import Backend, OnnxBackend, TorchBackend, resolve_device
from stages.detector.layouts import Layout, postprocess
from stages.detector.letterbox import letterbox, letterbox_shape, letterbox_tensor, scale_boxes, stack_centred
from stages.detector.nms import suppress_exclusive


@dataclass
class Thresholds:
    """What NMS keeps; mutable so that a running detector can be retuned."""

    conf: float = 0.25
    iou: float = 0.45
    classes: list[int] | None = None
    agnostic: bool = False
    max_det: int = 300

    def __post_init__(self) -> None:
        for name in ("conf", "iou"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} threshold {value} is outside [0, 1]")
        if self.max_det < 1:
            raise ValueError(f"max_det {self.max_det} must be at least 1")


@dataclass(frozen=True)
class Letterboxed:
    """How a frame was letterboxed: what maps its boxes back to source pixels."""

    ratio: float
    pad: tuple[float, float]
    source_shape: tuple[int, int]  # (h, w)


@dataclass
class BatchResult:
    detections: list[Detections]
    input_shape: tuple[int, int]  # (h, w) the model ran at
    preprocess_ms: float
    inference_ms: float  # the model's forward pass, device synchronised
    postprocess_ms: float  # NMS and box scaling


@dataclass
class Detector:
    backend: Backend
    img_size: int = 640
    thresholds: Thresholds = field(default_factory=Thresholds)
    exclusive: list[tuple[int, int]] = field(default_factory=list)  # class ids that cannot share a box
    exclusive_iou: float = 0.5  # overlap above which such boxes are one object
    # detect(): letterbox on the model's device (raw frames uploaded once); None: on CUDA with PyTorch
    letterbox_on_device: bool | None = None

    @property
    def names(self) -> list[str]:
        return self.backend.names

    @property
    def device(self) -> torch.device:
        return self.backend.device

    def batch_shape(self, shapes: Sequence[tuple[int, int]]) -> tuple[int, int]:
        """One input shape for the batch: the model's fixed one, else the smallest that holds every image.

        For frames of one size this is the official rectangular (``auto``) letterbox.
        """
        if self.backend.fixed_shape:
            return self.backend.fixed_shape
        fitted = [letterbox_shape(s, self.img_size, self.backend.stride) for s in shapes]
        return max(h for h, _ in fitted), max(w for _, w in fitted)

    def batch_letterboxed(
        self, images: Sequence[np.ndarray] | Sequence[torch.Tensor], frames: Sequence[Letterboxed]
    ) -> tuple[np.ndarray | torch.Tensor, list[Letterboxed]]:
        """Images letterboxed to shapes of their own as one batch (the model's fixed shape, else the
        largest), with each frame's pad moved by where its image now sits."""
        shape = self.backend.fixed_shape or (max(i.shape[0] for i in images), max(i.shape[1] for i in images))
        batch, offsets = stack_centred(list(images), shape)
        moved = [
            Letterboxed(f.ratio, (f.pad[0] + left, f.pad[1] + top), f.source_shape)
            for f, (left, top) in zip(frames, offsets)
        ]
        return batch, moved

    def detect(self, images: Sequence[np.ndarray]) -> BatchResult:
        """Detect on BGR uint8 images of any sizes; one ``Detections`` per image."""
        if not images:
            return BatchResult([], (0, 0), 0.0, 0.0, 0.0)
        start = time.perf_counter()
        target = self.batch_shape([img.shape[:2] for img in images])
        on_device = self.letterbox_on_device
        if on_device is None:
            on_device = self.device.type == "cuda" and isinstance(self.backend, TorchBackend)
        if on_device:
            boxed = [letterbox_tensor(torch.from_numpy(img).to(self.device), target) for img in images]
            batch: np.ndarray | torch.Tensor = torch.stack([b[0] for b in boxed])
        else:
            boxed = [letterbox(img, target, auto=False) for img in images]
            batch = np.stack([b[0] for b in boxed])
        frames = [Letterboxed(ratio, pad, img.shape[:2]) for img, (_, ratio, pad) in zip(images, boxed)]
        result = self.detect_letterboxed(batch, frames)
        result.preprocess_ms = (time.perf_counter() - start) * 1e3 - result.inference_ms - result.postprocess_ms
        return result

    def detect_letterboxed(
        self,
        batch: np.ndarray | torch.Tensor,
        frames: Sequence[Letterboxed],
        thresholds: Sequence[Thresholds] | None = None,
    ) -> BatchResult:
        """Detect on a batch already letterboxed (``[B, H, W, 3]`` BGR; a tensor on the device for
        PyTorch); boxes go back to source pixels.

        ``thresholds`` gives each image its own (e.g. per stream); the detector's own by default.
        """
        start = time.perf_counter()
        raw = self.backend.forward(batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        inferred = time.perf_counter()
        rows = [
            suppress_exclusive(r, self.exclusive, self.exclusive_iou)
            for r in self._postprocess(raw, len(batch), thresholds)
        ]
        detections = [
            Detections(scale_boxes(r[:, :4], f.ratio, f.pad, f.source_shape), r[:, 4], r[:, 5].astype(np.int32))
            for r, f in zip(rows, frames)
        ]
        done = time.perf_counter()
        return BatchResult(detections, batch.shape[1:3], 0.0, (inferred - start) * 1e3, (done - inferred) * 1e3)

    def _postprocess(
        self, raw: torch.Tensor | np.ndarray, batch: int, thresholds: Sequence[Thresholds] | None
    ) -> list[np.ndarray]:
        layout = self.backend.layout
        if thresholds is None or all(t == thresholds[0] for t in thresholds):
            t = thresholds[0] if thresholds else self.thresholds
            return postprocess(layout, raw, batch, t.conf, t.iou, t.classes, t.agnostic, t.max_det)
        rows = []
        for i, t in enumerate(thresholds):  # images with their own thresholds: one NMS each
            if layout is Layout.END2END:
                mine = raw[raw[:, 0] == i].copy()
                mine[:, 0] = 0
            else:
                mine = raw[i : i + 1]
            rows += postprocess(layout, mine, 1, t.conf, t.iou, t.classes, t.agnostic, t.max_det)
        return rows


def load_detector(
    weights: str | Path,
    device: str = "auto",
    img_size: int = 640,
    thresholds: Thresholds | None = None,
    names: Sequence[str] | None = None,
    half: bool | None = None,
    anchors: list[list[float]] | None = None,
    cuda_graphs: bool = False,
) -> Detector:
    """A detector for ``.pt``/``.pth``/``.safetensors`` (PyTorch) or ``.onnx`` (ONNX Runtime) weights.

    ``names`` override the class names, for weights that carry none; ``anchors`` are for
    ONNX files of raw maps that were trained with other than the YOLOv7 defaults;
    ``cuda_graphs`` replays a PyTorch model from CUDA graphs when it runs on a GPU.
    """
    if img_size % 32:
        raise ValueError(f"image size {img_size} must be a multiple of 32")
    torch_device = resolve_device(device)
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if path.suffix == ".onnx":
        backend: Backend = OnnxBackend(path, torch_device, img_size, anchors)
    else:
        backend = TorchBackend.load(path, torch_device, half, graphs=cuda_graphs and torch_device.type == "cuda")
    if names:
        backend.names = list(names)
    return Detector(backend, img_size, thresholds or Thresholds())


def exclusive_ids(names: Sequence[str], pairs: Sequence[Sequence[str]], strict: bool) -> list[tuple[int, int]]:
    """Class-name pairs as id pairs of this model. A pair naming a class the model lacks is an error
    when ``strict`` (the user listed it), else skipped: the defaults fit our model, not every model.
    """
    ids = []
    for pair in pairs:
        missing = [n for n in pair if n not in names]
        if missing and strict:
            raise ValueError(f"detector.exclusive: the model has no class {missing[0]!r} (it has {list(names)})")
        if not missing:
            ids.append((names.index(pair[0]), names.index(pair[1])))
    return ids


def detector_from_settings(settings: DetectorSettings) -> Detector:
    """The detector a config's ``[detector]`` section describes."""
    thresholds = Thresholds(settings.conf, settings.iou, settings.classes, settings.agnostic, settings.max_det)
    detector = load_detector(
        settings.weights,
        settings.device,
        settings.img_size,
        thresholds,
        settings.names,
        anchors=settings.anchors,
        cuda_graphs=settings.cuda_graphs == "auto",
    )
    strict = "exclusive" in settings.model_fields_set
    detector.exclusive = exclusive_ids(detector.names, settings.exclusive, strict)
    detector.exclusive_iou = settings.exclusive_iou
    return detector
