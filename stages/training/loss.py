"""The training loss: YOLOv5-style target assignment, CIoU box loss, BCE objectness and class losses.

Assignment (the simpler YOLOv5 matching, not YOLOv7's lead-guided OTA): a target is
given to every anchor whose width and height ratios to it are within ``anchor_t``
(4), in its own grid cell and the two neighbouring cells nearest its centre. The
objectness target of an assigned cell is the CIoU of its prediction with the target.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stages.detector.model import Model

BALANCE = (4.0, 1.0, 0.4)  # objectness weight per level, P3 to P5


def bbox_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of matching rows of two ``[n, 4]`` cx, cy, w, h tensors (Zheng et al., 2020)."""
    b1_x1, b1_x2 = box1[:, 0] - box1[:, 2] / 2, box1[:, 0] + box1[:, 2] / 2
    b1_y1, b1_y2 = box1[:, 1] - box1[:, 3] / 2, box1[:, 1] + box1[:, 3] / 2
    b2_x1, b2_x2 = box2[:, 0] - box2[:, 2] / 2, box2[:, 0] + box2[:, 2] / 2
    b2_y1, b2_y2 = box2[:, 1] - box2[:, 3] / 2, box2[:, 1] + box2[:, 3] / 2
    inter = (torch.min(b1_x2, b2_x2) - torch.max(b1_x1, b2_x1)).clamp(0) * (
        torch.min(b1_y2, b2_y2) - torch.max(b1_y1, b2_y1)
    ).clamp(0)
    w1, h1, w2, h2 = box1[:, 2], box1[:, 3] + eps, box2[:, 2], box2[:, 3] + eps
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1_x2, b2_x2) - torch.min(b1_x1, b2_x1)
    ch = torch.max(b1_y2, b2_y2) - torch.min(b1_y1, b2_y1)
    c2 = cw**2 + ch**2 + eps
    rho2 = (box2[:, 0] - box1[:, 0]) ** 2 + (box2[:, 1] - box1[:, 1]) ** 2
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class YoloLoss:
    def __init__(
        self, model: Model, img_size: int, box: float = 0.05, obj: float = 1.0, cls: float = 0.5, anchor_t: float = 4.0
    ) -> None:
        head = model.head
        self.na, self.nc, self.nl = head.na, head.nc, head.nl
        self.anchors = head.anchors  # grid units, [nl, na, 2]
        self.anchor_t = anchor_t
        # the official scaling of the gains to the number of levels, classes and image size
        self.box_gain = box * 3 / self.nl
        self.cls_gain = cls * self.nc / 80 * 3 / self.nl
        self.obj_gain = obj * (img_size / 640) ** 2 * 3 / self.nl
        self.bce = nn.BCEWithLogitsLoss()

    def __call__(self, maps: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``maps``: raw head outputs ``[B, na, ny, nx, 5 + nc]``; ``targets``: ``[n, 6]`` image, class, cx, cy, w, h
        (normalised). Returns the loss to back-propagate and its detached (box, obj, cls) parts."""
        device = targets.device
        lbox, lobj, lcls = (torch.zeros(1, device=device) for _ in range(3))
        for level, (pred, (image, anchor, gy, gx), tbox, tcls, anchors) in enumerate(
            zip(maps, *self._assign(maps, targets))
        ):
            tobj = torch.zeros(pred.shape[:4], device=device, dtype=pred.dtype)
            if len(image):
                picked = pred[image, anchor, gy, gx]
                pxy = picked[:, :2].sigmoid() * 2 - 0.5
                pwh = (picked[:, 2:4].sigmoid() * 2) ** 2 * anchors
                ciou = bbox_ciou(torch.cat((pxy, pwh), 1), tbox)
                lbox += (1.0 - ciou).mean()
                tobj[image, anchor, gy, gx] = ciou.detach().clamp(0).type(tobj.dtype)
                if self.nc > 1:
                    target_cls = torch.zeros_like(picked[:, 5:])
                    target_cls[range(len(tcls)), tcls] = 1.0
                    lcls += self.bce(picked[:, 5:], target_cls)
            lobj += self.bce(pred[..., 4], tobj) * BALANCE[level]
        lbox, lobj, lcls = lbox * self.box_gain, lobj * self.obj_gain, lcls * self.cls_gain
        batch = maps[0].shape[0]
        return (lbox + lobj + lcls) * batch, torch.cat((lbox, lobj, lcls)).detach()

    def _assign(self, maps: list[torch.Tensor], targets: torch.Tensor) -> tuple[list, list, list, list]:
        """Per level: (image, anchor, gy, gx) indices, target boxes relative to their cell, classes, anchors."""
        device = targets.device
        n = targets.shape[0]
        gain = torch.ones(7, device=device)
        anchor_index = torch.arange(self.na, device=device).float().view(self.na, 1).repeat(1, n)
        targets = torch.cat((targets.repeat(self.na, 1, 1), anchor_index[:, :, None]), 2)  # [na, n, 7]
        g = 0.5
        offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device).float() * g
        indices, boxes, classes, anchors_out = [], [], [], []
        for level in range(self.nl):
            anchors = self.anchors[level]
            ny, nx = maps[level].shape[2:4]
            gain[2:6] = torch.tensor([nx, ny, nx, ny], device=device)
            t = targets * gain
            if n:
                ratio = t[:, :, 4:6] / anchors[:, None]
                t = t[torch.max(ratio, 1 / ratio).max(2)[0] < self.anchor_t]
                gxy = t[:, 2:4]
                gxi = gain[[2, 3]] - gxy
                # the neighbour cells nearest the centre: left/up when in the cell's low half, right/down else
                left, up = ((gxy % 1 < g) & (gxy > 1)).T
                right, down = ((gxi % 1 < g) & (gxi > 1)).T
                chosen = torch.stack((torch.ones_like(left), left, up, right, down))
                t = t.repeat((5, 1, 1))[chosen]
                shifts = (torch.zeros_like(gxy)[None] + offsets[:, None])[chosen]
            else:
                t = targets[0]
                shifts = 0
            image, cls = t[:, :2].long().T
            gxy = t[:, 2:4]
            gwh = t[:, 4:6]
            gij = (gxy - shifts).long()
            gi, gj = gij[:, 0].clamp_(0, nx - 1), gij[:, 1].clamp_(0, ny - 1)
            anchor = t[:, 6].long()
            indices.append((image, anchor, gj, gi))
            boxes.append(torch.cat((gxy - torch.stack((gi, gj), 1), gwh), 1))
            classes.append(cls)
            anchors_out.append(anchors[anchor])
        return indices, boxes, classes, anchors_out
