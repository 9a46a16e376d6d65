"""Inference backends: PyTorch for ``.pt``/``.safetensors`` weights, ONNX Runtime for ``.onnx``.

Both take a letterboxed uint8 BGR batch ``[B, H, W, 3]`` and return the raw model
output in a known ``Layout``; normalisation to float happens on the device.
"""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from stages.detector.checkpoints import load_model
from stages.detector.graphs import GraphedModel
from stages.detector.layouts import (
    KNOWN_LAYOUTS,
    Layout,
    LayoutError,
    decode_raw,
    detect_layout,
    missing_anchors_message,
)
from stages.detector.model import Model

log = logging.getLogger(__name__)


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> the first GPU when there is one, else the CPU; ``cuda[:N]`` must exist."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"device {spec!r}: expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type != "cpu":
        raise ValueError(f"device {spec!r}: expected cpu, cuda, cuda:N or auto")
    return device


class Backend(Protocol):
    names: list[str]
    layout: Layout
    device: torch.device
    fixed_shape: tuple[int, int] | None  # (h, w) the model only accepts, if any
    stride: int

    def forward(self, batch: np.ndarray) -> torch.Tensor | np.ndarray: ...


class TorchBackend:
    """A fused YOLOv7 ``Model``; fp16 and channels-last on CUDA, and replayed from CUDA graphs with ``graphs``."""

    layout = Layout.YOLO
    fixed_shape = None

    def __init__(self, model: Model, device: torch.device, half: bool | None = None, graphs: bool = False) -> None:
        """Fuses ``model`` in place and serves it; pass a copy if training goes on with the original."""
        model = model.fuse()
        self.names = list(model.names)
        self.stride = int(model.stride.max())
        self.device = device
        self.half = device.type == "cuda" if half is None else half
        model = model.to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model = model.half() if self.half else model
        self.run = GraphedModel(self.model) if graphs else self.model

    @classmethod
    def load(
        cls, weights: str | Path, device: torch.device, half: bool | None = None, graphs: bool = False
    ) -> TorchBackend:
        return cls(load_model(weights), device, half, graphs)

    @torch.inference_mode()
    def forward(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``batch``: ``[B, H, W, 3]`` BGR uint8, from the CPU or already on the device."""
        x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(batch)
        x = x.to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).flip(1)  # BHWC BGR -> BCHW RGB
        x = (x.half() if self.half else x.float()) / 255.0
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.run(x).float()


def _names_from_metadata(metadata: dict[str, str]) -> list[str] | None:
    """Class names as our export (JSON list) or Ultralytics (dict literal) stores them."""
    raw = metadata.get("names")
    if not raw:
        return None
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        try:
            parsed = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return None
    if isinstance(parsed, dict):
        return [str(parsed[k]) for k in sorted(parsed, key=int)]
    return [str(n) for n in parsed] if isinstance(parsed, list) else None


TENSORRT_CACHE = Path.home() / ".cache" / "vestwatch" / "tensorrt"


def onnx_providers(device: torch.device, available: list[str]) -> list[str | tuple[str, dict]]:
    """ONNX Runtime's providers for ``device``, best first, among those installed: on CUDA,
    TensorRT (fp16; its engines cached, since building one takes minutes), then CUDA; the CPU last."""
    providers: list[str | tuple[str, dict]] = ["CPUExecutionProvider"]
    if device.type == "cuda":
        gpu = device.index or 0
        tensorrt = {"device_id": gpu, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(TENSORRT_CACHE)}  # fmt: skip
        wanted = [("TensorrtExecutionProvider", tensorrt), ("CUDAExecutionProvider", {"device_id": gpu})]
        providers = [p for p in wanted if p[0] in available] + providers
    return providers


class OnnxBackend:
    """An ONNX export in any known layout, on the CUDA provider when the device is a GPU.

    Raw per-level maps (YOLOv7 without ``--grid``) are decoded here, so that ``layout`` is
    always one that ``postprocess`` reads; their anchors come from the file's metadata,
    else from ``anchors`` (config), else the file is refused: a guess would misplace every box.
    """

    stride = 32

    def __init__(
        self, weights: str | Path, device: torch.device, img_size: int = 640, anchors: list[list[float]] | None = None
    ) -> None:
        import onnxruntime as ort  # heavy import, only for ONNX weights

        providers = onnx_providers(device, ort.get_available_providers())
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(weights), options, providers=providers)
        except Exception as error:  # ORT raises its own Fail/InvalidGraph types
            raise ValueError(f"{weights}: not a loadable ONNX model ({str(error).splitlines()[0]})") from None
        self.device = device
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32
        _, _, h, w = model_input.shape
        self.fixed_shape = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        batch_dim = model_input.shape[0]
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) else None
        metadata = self.session.get_modelmeta().custom_metadata_map
        names = _names_from_metadata(metadata)
        self.anchors: list[list[float]] | None = None  # set for raw maps, which forward() decodes
        self.layout, nc = self._probe(img_size, len(names) if names else None)
        if self.layout is Layout.RAW:
            self.anchors = json.loads(metadata["anchors"]) if "anchors" in metadata else anchors
            if not self.anchors:
                raise LayoutError(
                    f"{weights}: {missing_anchors_message([o.shape for o in self.session.get_outputs()])}"
                )
            self.layout = Layout.YOLO
            self._probe(img_size, nc)  # the anchors must fit the maps
        self.names = names or [str(i) for i in range(nc)]

    def _probe(self, img_size: int, nc_hint: int | None) -> tuple[Layout, int]:
        """Run one blank image to learn the concrete output shapes, then the layout and class count."""
        h, w = self.fixed_shape or (img_size, img_size)
        outputs = self._run(np.full((1, h, w, 3), 114, np.uint8))
        shapes = [list(o.shape) for o in outputs]
        declared = [o.shape for o in self.session.get_outputs()]
        try:
            layout = detect_layout(shapes, nc_hint)
        except LayoutError:
            raise LayoutError(f"unknown output layout {declared} (ran as {shapes}): expected {KNOWN_LAYOUTS}") from None
        if layout is Layout.YOLO:
            nc = shapes[0][2] - 5
        elif layout is Layout.RAW:
            nc = shapes[0][4] - 5
        elif layout is Layout.ANCHOR_FREE:
            nc = shapes[0][1] - 4
        else:
            nc = nc_hint or 0  # an in-graph NMS does not reveal it
        return layout, nc

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs for a BHWC BGR uint8 batch; raw maps come back decoded once anchors are known."""
        x = batch[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) / 255.0  # BHWC BGR -> BCHW RGB
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(x, self.input_dtype)})
        if self.anchors is not None:
            return [decode_raw(outputs, self.anchors, batch.shape[1:3])]
        return outputs

    def forward(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(batch, torch.Tensor):  # letterboxed by torch: ONNX Runtime takes host memory
            batch = batch.cpu().numpy()
        if self.fixed_batch and len(batch) != self.fixed_batch:
            if self.layout is Layout.END2END:  # batch index lives in column 0: renumber
                parts = []
                for i, image in enumerate(batch):
                    rows = self._run(image[None])[0].astype(np.float32)
                    rows[:, 0] = i
                    parts.append(rows)
                return np.concatenate(parts) if parts else np.zeros((0, 7), np.float32)
            return np.concatenate([self._run(image[None])[0] for image in batch])
        return self._run(batch)[0].astype(np.float32)
