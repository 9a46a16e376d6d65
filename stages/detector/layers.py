"""YOLOv7 building blocks, attribute-compatible with the official ``models.common``.

The attribute names (``conv``, ``bn``, ``act``, ``m``, ``cv1``..``cv7``,
``rbr_dense``, ``rbr_1x1``, ``rbr_identity``, ``implicit``) are those of the official
code base on purpose: an official training checkpoint pickles these modules by
attribute, and the checkpoint loader maps its classes onto these ones.
"""

from __future__ import annotations

import torch
from torch import nn


def autopad(kernel: int, padding: int | None = None) -> int:
    """'Same' padding for an odd kernel unless the cfg gives one."""
    return kernel // 2 if padding is None else padding


def activation(act: bool | nn.Module) -> nn.Module:
    """The official convention: True means SiLU, a module is used as given, False none."""
    if act is True:
        return nn.SiLU()
    return act if isinstance(act, nn.Module) else nn.Identity()


def fuse_conv_and_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One convolution equal to ``bn(conv(x))`` in eval mode."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
    ).to(conv.weight.device, conv.weight.dtype)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.data.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.data.copy_((conv_bias - bn.running_mean) * scale + bn.bias)
    fused.requires_grad_(False)
    return fused


class Conv(nn.Module):
    """Conv2d + BatchNorm + activation; ``fuse()`` folds the BatchNorm away."""

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 1,
        s: int = 1,
        p: int | None = None,
        g: int = 1,
        act: bool | nn.Module = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> None:
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fuse_conv_and_bn(self.conv, self.bn)
            self.bn = nn.Identity()


class Concat(nn.Module):
    """Concatenate the outputs of several earlier layers."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


class MP(nn.Module):
    """Stride-k max pool: the downsampling branch of YOLOv7's transition blocks."""

    def __init__(self, k: int = 2) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


class SP(nn.Module):
    """Size-preserving max pool, the SPP branch of yolov7-tiny."""

    def __init__(self, k: int = 3, s: int = 1) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=s, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


class SPPCSPC(nn.Module):
    """CSP spatial-pyramid pooling, the neck entry of yolov7 and larger."""

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        shortcut: bool = False,
        g: int = 1,
        e: float = 0.5,
        k: tuple[int, ...] = (5, 9, 13),
    ) -> None:
        super().__init__()
        hidden = int(2 * c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(c1, hidden, 1, 1)
        self.cv3 = Conv(hidden, hidden, 3, 1)
        self.cv4 = Conv(hidden, hidden, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)
        self.cv5 = Conv(4 * hidden, hidden, 1, 1)
        self.cv6 = Conv(hidden, hidden, 3, 1)
        self.cv7 = Conv(2 * hidden, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [pool(x1) for pool in self.m], 1)))
        return self.cv7(torch.cat((y1, self.cv2(x)), dim=1))


class RepConv(nn.Module):
    """RepVGG block: 3x3 + 1x1 + identity branches while training, one 3x3 conv after ``fuse()``."""

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 3,
        s: int = 1,
        p: int | None = None,
        g: int = 1,
        act: bool | nn.Module = True,
    ) -> None:
        super().__init__()
        if k != 3 or autopad(k, p) != 1:
            raise ValueError(f"RepConv needs a 3x3 kernel with padding 1, got k={k} p={p}")
        self.deploy = False
        self.groups = g
        self.in_channels = c1
        self.out_channels = c2
        self.act = activation(act)
        self.rbr_identity = nn.BatchNorm2d(c1) if c1 == c2 and s == 1 else None
        self.rbr_dense = nn.Sequential(nn.Conv2d(c1, c2, k, s, 1, groups=g, bias=False), nn.BatchNorm2d(c2))
        self.rbr_1x1 = nn.Sequential(nn.Conv2d(c1, c2, 1, s, 0, groups=g, bias=False), nn.BatchNorm2d(c2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            return self.act(self.rbr_reparam(x))
        identity = 0 if self.rbr_identity is None else self.rbr_identity(x)
        return self.act(self.rbr_dense(x) + self.rbr_1x1(x) + identity)

    def fuse(self) -> None:
        """Re-parameterise the three branches into ``rbr_reparam`` (RepVGG, arXiv:2101.03697)."""
        if self.deploy:
            return
        dense = fuse_conv_and_bn(self.rbr_dense[0], self.rbr_dense[1])
        pointwise = fuse_conv_and_bn(self.rbr_1x1[0], self.rbr_1x1[1])
        weight = dense.weight + nn.functional.pad(pointwise.weight, [1, 1, 1, 1])
        bias = dense.bias + pointwise.bias
        if self.rbr_identity is not None:
            per_group = self.in_channels // self.groups
            eye = torch.zeros(self.in_channels, per_group, 1, 1, device=weight.device, dtype=weight.dtype)
            eye[torch.arange(self.in_channels), torch.arange(self.in_channels) % per_group] = 1.0
            identity_conv = nn.Conv2d(self.in_channels, self.in_channels, 1, groups=self.groups, bias=False)
            identity_conv.weight.data.copy_(eye)
            identity = fuse_conv_and_bn(identity_conv.to(weight.device, weight.dtype), self.rbr_identity)
            weight = weight + nn.functional.pad(identity.weight, [1, 1, 1, 1])
            bias = bias + identity.bias
        dense.weight.data.copy_(weight)
        dense.bias.data.copy_(bias)
        self.rbr_reparam = dense
        self.rbr_dense = self.rbr_1x1 = self.rbr_identity = None
        self.deploy = True


class ImplicitA(nn.Module):
    """Learned additive bias (YOLOR implicit knowledge), folded into the next conv on fuse."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.channel = channel
        self.implicit = nn.Parameter(torch.zeros(1, channel, 1, 1))
        nn.init.normal_(self.implicit, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit + x


class ImplicitM(nn.Module):
    """Learned multiplicative scale (YOLOR implicit knowledge), folded into the conv on fuse."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.channel = channel
        self.implicit = nn.Parameter(torch.ones(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=1.0, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit * x
