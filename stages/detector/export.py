"""Export a PyTorch model to ONNX with a dynamic batch, in the layouts ``OnnxBackend`` reads.

``yolo`` is the official ``--grid`` output ``[B, N, 5 + nc]``; ``end2end`` appends an
ONNX ``NonMaxSuppression`` (run by ONNX Runtime) and emits the official ``--end2end``
rows ``[K, 7]`` = batch, x0, y0, x1, y1, class, score; ``raw`` is the official export
without ``--grid``: one undecoded map per level, for runtimes that decode themselves
(the anchors go into the metadata).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch
from torch import nn

from stages.detector.layouts import Layout
from stages.detector.model import Model
from stages.detector.nms import MAX_WH

OPSET = 17


class _OnnxNms(torch.autograd.Function):
    """Stands for ONNX ``NonMaxSuppression`` while tracing; only its symbolic matters."""

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class, iou_threshold, score_threshold):
        return torch.zeros((0, 3), dtype=torch.int64, device=boxes.device)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_threshold, score_threshold):
        return g.op("NonMaxSuppression", boxes, scores, max_per_class, iou_threshold, score_threshold)


class EndToEnd(nn.Module):
    """Model + in-graph NMS, class-aware by offsetting boxes per class as the official export does."""

    def __init__(self, model: Model, max_det: int, iou: float, conf: float) -> None:
        super().__init__()
        self.model = model
        self.single_class = model.nc == 1
        self.register_buffer("max_det", torch.tensor([max_det]))
        self.register_buffer("iou", torch.tensor([iou]))
        self.register_buffer("conf", torch.tensor([conf]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pred = self.model(images)
        xy, half = pred[..., :2], pred[..., 2:4] / 2
        boxes = torch.cat((xy - half, xy + half), -1)
        scores = pred[..., 4:5] if self.single_class else pred[..., 5:] * pred[..., 4:5]
        score, category = scores.max(2, keepdim=True)
        nms_boxes = boxes + category.float() * MAX_WH
        selected = _OnnxNms.apply(nms_boxes, score.transpose(1, 2).contiguous(), self.max_det, self.iou, self.conf)
        batch_index, box_index = selected[:, 0], selected[:, 2]
        return torch.cat(
            [
                batch_index.unsqueeze(1).float(),
                boxes[batch_index, box_index, :],
                category[batch_index, box_index, :].float(),
                score[batch_index, box_index, :],
            ],
            1,
        )


def export_onnx(
    model: Model,
    path: str | Path,
    img_size: int = 640,
    layout: Layout = Layout.YOLO,
    max_det: int = 300,
    iou: float = 0.45,
    conf: float = 0.25,
) -> Path:
    """Write ``path``; batch, height and width stay dynamic; class names go into the metadata."""
    import onnx  # only needed to stamp the metadata

    path = Path(path)
    model = model.float().cpu().fuse()
    if layout is Layout.YOLO:
        graph, outputs = model, {"output": {0: "batch", 1: "boxes"}}
    elif layout is Layout.END2END:
        graph, outputs = EndToEnd(model, max_det, iou, conf).eval(), {"output": {0: "detections"}}
    elif layout is Layout.RAW:
        model.head.raw_output = True
        levels = [f"p{round(math.log2(s))}" for s in model.stride.tolist()]  # p3, p4, p5
        graph, outputs = model, {name: {0: "batch", 2: "ny", 3: "nx"} for name in levels}
    else:
        raise ValueError(f"export layout {layout.value!r} is not written by vestwatch (yolo, end2end or raw)")
    try:
        with warnings.catch_warnings():
            # the TorchScript exporter is deprecated in favour of dynamo, which cannot yet emit the custom NMS op
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            _trace_to_onnx(graph, path, img_size, outputs)
    finally:
        model.head.raw_output = False
    anchors = (model.head.anchor_grid.view(model.head.nl, -1)).tolist()
    metadata = {"names": json.dumps(list(model.names)), "stride": str(int(model.stride.max()))}
    if layout is Layout.RAW:
        metadata["anchors"] = json.dumps([[round(v, 3) for v in level] for level in anchors])
    proto = onnx.load(str(path))
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


def _trace_to_onnx(graph: nn.Module, path: Path, img_size: int, outputs: dict[str, dict[int, str]]) -> None:
    torch.onnx.export(
        graph,
        (torch.zeros(1, 3, img_size, img_size),),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=["images"],
        output_names=list(outputs),
        dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, **outputs},
    )
