"""Anchor-based detection heads (``Detect``, ``IDetect``), attribute-compatible with the official ones.

In training mode (or with ``raw_output`` set, as the official export without ``--grid``
does) a head returns the raw per-level maps ``[B, na, ny, nx, no]``; in eval mode it
returns the decoded predictions ``[B, N, 5 + nc]`` (cx, cy, w, h in input pixels,
objectness, class scores), which is also the layout of an official ``export.py --grid``
ONNX file.
"""

from __future__ import annotations

import torch
from torch import nn

from stages.detector.layers import ImplicitA, ImplicitM


def decode_level(raw: torch.Tensor, stride: float, anchors: torch.Tensor) -> torch.Tensor:
    """A level's raw map ``[B, na, ny, nx, no]`` -> ``[B, na*ny*nx, no]`` boxes in input pixels
    (the YOLOv7 formula); ``anchors`` are ``na`` (w, h) pairs in pixels."""
    bs, na, ny, nx, no = raw.shape
    ys = torch.arange(ny, device=raw.device, dtype=raw.dtype)
    xs = torch.arange(nx, device=raw.device, dtype=raw.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack((grid_x, grid_y), 2).view(1, 1, ny, nx, 2)
    y = raw.sigmoid()
    xy = (y[..., 0:2] * 2.0 - 0.5 + grid) * stride
    wh = (y[..., 2:4] * 2) ** 2 * anchors.to(raw.dtype).view(1, na, 1, 1, 2)
    return torch.cat((xy, wh, y[..., 4:]), -1).view(bs, -1, no)


class Detect(nn.Module):
    """YOLOv5/YOLOv7 head: one 1x1 conv per level, sigmoid decode against anchors and grid."""

    stride: torch.Tensor | None = None  # set by the model once the strides are measured
    raw_output = False  # eval mode returns the per-level maps undecoded (ONNX export without the grid)

    def __init__(self, nc: int = 80, anchors: list[list[float]] = (), ch: list[int] = ()) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        grid_anchors = torch.tensor(anchors).float().view(self.nl, -1, 2)
        self.register_buffer("anchors", grid_anchors)  # in grid units once the stride is known
        self.register_buffer("anchor_grid", grid_anchors.clone().view(self.nl, 1, -1, 1, 1, 2))  # pixels
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

    def level_output(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.m[i](x)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        maps = []
        for i in range(self.nl):
            out = self.level_output(i, xs[i])
            bs, _, ny, nx = out.shape
            maps.append(out.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        if self.training or self.raw_output:
            return maps
        return torch.cat([decode_level(m, self.stride[i], self.anchor_grid[i]) for i, m in enumerate(maps)], 1)

    def fuse(self) -> None:
        """Nothing to fold in the plain head."""


class IDetect(Detect):
    """YOLOv7 head with YOLOR implicit add/multiply around the output conv; ``fuse()`` folds them."""

    fused = False  # class default, so that unpickled official heads read as unfused

    def __init__(self, nc: int = 80, anchors: list[list[float]] = (), ch: list[int] = ()) -> None:
        super().__init__(nc, anchors, ch)
        self.ia = nn.ModuleList(ImplicitA(c) for c in ch)
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in ch)

    def level_output(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self.m[i](x)
        return self.im[i](self.m[i](self.ia[i](x)))

    def fuse(self) -> None:
        """conv(x + a) * m == conv'(x) with w' = w * m and b' = (b + w @ a) * m."""
        if self.fused:
            return
        for conv, add, mul in zip(self.m, self.ia, self.im):
            out_c, in_c = conv.weight.shape[:2]
            scale = mul.implicit.reshape(out_c)
            with torch.no_grad():
                conv.bias += conv.weight.reshape(out_c, in_c) @ add.implicit.reshape(in_c)
                conv.bias *= scale
                conv.weight *= scale.reshape(out_c, 1, 1, 1)
        self.fused = True
