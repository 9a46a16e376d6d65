"""The output layouts YOLO models are exported with, and how to turn each into detections.

| layout      | output                                  | who writes it                                  |
|-------------|-----------------------------------------|------------------------------------------------|
| yolo        | ``[B, N, 5 + nc]`` cx,cy,w,h,obj,cls... | YOLOv7 ``export.py --grid``, YOLOv5, our models |
| anchor-free | ``[B, 4 + nc, N]`` cx,cy,w,h,cls...     | YOLOv8 / YOLO11                                |
| end2end     | ``[K, 7]`` batch,x0,y0,x1,y1,cls,score  | YOLOv7 ``export.py --end2end`` (ORT NMS)      |
| raw         | per level ``[B, na, ny, nx, 5 + nc]``   | YOLOv7 ``export.py`` without ``--grid``        |

The layout is told from the graph's output shapes; an unknown one is refused with
the shapes in the message. ``raw`` maps are logits without the grid: ``decode_raw``
turns them into the ``yolo`` layout given the anchors, which such a graph does not hold
(ours carry them in the metadata; the official export does not).
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import torch

from stages.detector.heads import decode_level
from stages.detector.model import load_cfg
from stages.detector.nms import non_max_suppression, xywh_to_xyxy


class Layout(str, Enum):
    YOLO = "yolo"
    ANCHOR_FREE = "anchor-free"
    END2END = "end2end"
    RAW = "raw"


KNOWN_LAYOUTS = (
    "[B,N,5+nc] (YOLOv5/v7), [B,4+nc,N] (YOLOv8/11), [K,7] (YOLOv7 end2end) "
    "or per-level [B,na,ny,nx,5+nc] (YOLOv7 without --grid)"
)


class LayoutError(ValueError):
    """An ONNX model whose outputs match none of the known YOLO layouts."""


def detect_layout(output_shapes: list[list[int | str | None]], nc_hint: int | None = None) -> Layout:
    """The layout from the ONNX outputs' shapes (symbolic dims are strings or None)."""
    described = ", ".join(str(list(s)) for s in output_shapes)
    if len(output_shapes) == 1 and len(output_shapes[0]) == 2 and output_shapes[0][1] == 7:
        return Layout.END2END
    if len(output_shapes) > 1 and all(len(s) == 5 and s[4] == output_shapes[0][4] for s in output_shapes):
        return Layout.RAW
    if output_shapes and len(output_shapes[0]) == 3:
        _, d1, d2 = output_shapes[0]
        if isinstance(d1, int) and isinstance(d2, int):
            if nc_hint is not None:
                if d2 == 5 + nc_hint:
                    return Layout.YOLO
                if d1 == 4 + nc_hint:
                    return Layout.ANCHOR_FREE
            # many boxes, few channels: the channel axis is the shorter one
            return Layout.YOLO if d1 > d2 else Layout.ANCHOR_FREE
        if isinstance(d2, int):  # [B, N?, C]: the box count is the dynamic axis
            return Layout.YOLO
        if isinstance(d1, int):  # [B, C, N?]
            return Layout.ANCHOR_FREE
    raise LayoutError(f"unknown output layout {described}: expected {KNOWN_LAYOUTS}")


def missing_anchors_message(shapes: list[list[int]]) -> str:
    """What to do about raw maps with no anchors: they differ per cfg, and training may re-fit them."""
    defaults = "; ".join(f"{cfg}: {load_cfg(cfg)['anchors']}" for cfg in ("yolov7-tiny", "yolov7"))
    return (
        f"output maps {shapes} are undecoded and the file holds no anchors: set detector.anchors to the "
        f"model's (its training cfg or checkpoint; the official cfgs' are {defaults})"
    )


def decode_raw(maps: list[np.ndarray], anchors: list[list[float]], input_shape: tuple[int, int]) -> np.ndarray:
    """Per-level raw maps -> ``[B, N, 5 + nc]`` in the ``yolo`` layout; each level's stride is the
    input height over its grid height, its anchors the matching ``anchors`` row (pixels)."""
    if len(anchors) != len(maps) or any(len(a) != 2 * m.shape[1] for a, m in zip(anchors, maps)):
        shapes = [list(m.shape) for m in maps]
        raise LayoutError(f"anchors {anchors} do not fit output maps {shapes}: set detector.anchors")
    levels = [
        decode_level(torch.from_numpy(m).float(), input_shape[0] / m.shape[2], torch.tensor(a, dtype=torch.float32))
        for m, a in zip(maps, anchors)
    ]
    return torch.cat(levels, 1).numpy()


def decode_yolo(pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, N, 5 + nc]`` -> xyxy boxes and per-class confidence (obj x cls)."""
    boxes = xywh_to_xyxy(pred[..., :4])
    if pred.shape[-1] == 6:  # single-class models are trained with a constant class score
        return boxes, pred[..., 4:5]
    return boxes, pred[..., 5:] * pred[..., 4:5]


def decode_anchor_free(pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, 4 + nc, N]`` -> xyxy boxes and per-class confidence."""
    pred = pred.transpose(1, 2)
    return xywh_to_xyxy(pred[..., :4]), pred[..., 4:]


def split_end2end(rows: np.ndarray, batch: int, conf: float, classes: list[int] | None) -> list[np.ndarray]:
    """``[K, 7]`` rows from an in-graph NMS -> per image ``[n, 6]`` (x1, y1, x2, y2, score, class)."""
    out = []
    for b in range(batch):
        mine = rows[(rows[:, 0] == b) & (rows[:, 6] > conf)]
        if classes is not None:
            mine = mine[np.isin(mine[:, 5], classes)]
        mine = mine[np.argsort(-mine[:, 6], kind="stable")]
        out.append(mine[:, [1, 2, 3, 4, 6, 5]].astype(np.float32))
    return out


def postprocess(
    layout: Layout,
    outputs: torch.Tensor | np.ndarray,
    batch: int,
    conf: float,
    iou: float,
    classes: list[int] | None = None,
    agnostic: bool = False,
    max_det: int = 300,
) -> list[np.ndarray]:
    """Per image ``[n, 6]`` detections in model-input pixels, whatever the layout."""
    if layout is Layout.END2END:
        return [d[:max_det] for d in split_end2end(np.asarray(outputs), batch, conf, classes)]
    pred = torch.as_tensor(outputs)
    boxes, scores = decode_yolo(pred) if layout is Layout.YOLO else decode_anchor_free(pred)
    return non_max_suppression(boxes, scores, conf, iou, classes, agnostic, max_det)
