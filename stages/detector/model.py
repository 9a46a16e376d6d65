"""A YOLOv7-family model built from an official-style cfg (backbone + head layer lists).

>>> model = Model("yolov7-tiny", nc=2).fuse()
>>> model(torch.zeros(1, 3, 640, 640)).shape   # [B, anchors x cells, 5 + nc]
torch.Size([1, 25200, 7])

The cfg semantics are those of the official ``models/yolo.py``: each row is
``[from, number, module, args]``; width/depth multiples scale channels and repeats;
the structure and attribute names match, so official checkpoints load onto it.
Unlike the official parser, module and argument strings are looked up in a fixed
table, never ``eval``-ed.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from stages.detector.heads import Detect, IDetect
from stages.detector.layers import MP, SP, SPPCSPC, Concat, Conv, RepConv

CFG_DIR = Path(__file__).parent / "cfg"
BUILTIN_CFGS = sorted(p.stem for p in CFG_DIR.glob("*.yaml"))

MODULES: dict[str, type[nn.Module]] = {
    "Conv": Conv,
    "Concat": Concat,
    "MP": MP,
    "SP": SP,
    "SPPCSPC": SPPCSPC,
    "RepConv": RepConv,
    "Detect": Detect,
    "IDetect": IDetect,
    "nn.Upsample": nn.Upsample,
}
CONV_LIKE = (Conv, RepConv, SPPCSPC)
HEADS = (Detect, IDetect)
ACTIVATION = re.compile(r"^nn\.(LeakyReLU|SiLU|ReLU|Hardswish)\(([\d.]*)\)$")


def load_cfg(cfg: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A cfg dict from a built-in name (``yolov7-tiny``), a YAML path or a dict."""
    if isinstance(cfg, dict):
        return copy.deepcopy(cfg)
    path = Path(cfg)
    if str(cfg) in BUILTIN_CFGS:
        path = CFG_DIR / f"{cfg}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"model cfg {cfg!r} is neither a file nor one of {BUILTIN_CFGS}")
    return yaml.safe_load(path.read_text())


def _resolve_arg(arg: Any, nc: int, anchors: Any) -> Any:
    """Turn the cfg's symbolic arguments into values without ``eval``."""
    if not isinstance(arg, str):
        return arg
    if arg == "nc":
        return nc
    if arg == "anchors":
        return anchors
    if arg == "None":
        return None
    match = ACTIVATION.match(arg.replace(" ", ""))
    if match:
        name, value = match.groups()
        return getattr(nn, name)(float(value)) if value else getattr(nn, name)()
    if not arg.isidentifier():
        raise ValueError(f"cfg argument {arg!r} is not a supported expression")
    return arg  # plain words such as 'nearest'


def _make_divisible(x: float, divisor: int = 8) -> int:
    return math.ceil(x / divisor) * divisor


def parse_model(cfg: dict[str, Any], in_channels: int) -> tuple[nn.Sequential, list[int]]:
    """Build the layer list and the indices whose outputs later layers read."""
    nc, anchors = cfg["nc"], cfg["anchors"]
    depth, width = cfg.get("depth_multiple", 1.0), cfg.get("width_multiple", 1.0)
    na = len(anchors[0]) // 2 if isinstance(anchors, list) else anchors
    outputs = na * (nc + 5)
    channels = [in_channels]
    layers: list[nn.Module] = []
    save: list[int] = []
    for i, (source, repeats, name, raw_args) in enumerate(cfg["backbone"] + cfg["head"]):
        if name not in MODULES:
            raise ValueError(f"cfg layer {i}: module {name!r} is not supported (known: {sorted(MODULES)})")
        module_cls = MODULES[name]
        args = [_resolve_arg(a, nc, anchors) for a in raw_args]
        repeats = max(round(repeats * depth), 1) if repeats > 1 else repeats
        if module_cls in CONV_LIKE:
            c1, c2 = channels[source], args[0]
            if c2 != outputs:
                c2 = _make_divisible(c2 * width)
            args = [c1, c2, *args[1:]]
            if module_cls is SPPCSPC:
                args.insert(2, repeats)
                repeats = 1
        elif module_cls is Concat:
            c2 = sum(channels[x] for x in source)
        elif module_cls in HEADS:
            args.append([channels[x] for x in source])
            if isinstance(args[1], int):
                args[1] = [list(range(args[1] * 2))] * len(source)
        else:
            c2 = channels[source]
        layer = nn.Sequential(*(module_cls(*args) for _ in range(repeats))) if repeats > 1 else module_cls(*args)
        layer.i, layer.f, layer.type = i, source, name  # the official bookkeeping attributes
        save.extend(x % i for x in ([source] if isinstance(source, int) else source) if x != -1)
        layers.append(layer)
        if i == 0:
            channels = []
        channels.append(c2)
    return nn.Sequential(*layers), sorted(save)


class Model(nn.Module):
    """The detector network; ``names`` are the class names it was trained on."""

    def __init__(
        self,
        cfg: str | Path | dict[str, Any] = "yolov7-tiny",
        ch: int = 3,
        nc: int | None = None,
        names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.yaml = load_cfg(cfg)
        if nc is not None:
            self.yaml["nc"] = nc
        self.model, self.save = parse_model(self.yaml, ch)
        self.names = list(names) if names else [str(i) for i in range(self.yaml["nc"])]
        if len(self.names) != self.yaml["nc"]:
            raise ValueError(f"{len(self.names)} class names for a model of {self.yaml['nc']} classes")
        head = self.model[-1]
        probe = 256
        with torch.no_grad():
            self.train()
            maps = self.forward(torch.zeros(1, ch, probe, probe))
        head.stride = torch.tensor([probe / m.shape[-3] for m in maps])
        head.anchors /= head.stride.view(-1, 1, 1)
        self.stride = head.stride
        self._initialize_weights()
        self._initialize_biases()

    @property
    def head(self) -> Detect:
        return self.model[-1]

    @property
    def nc(self) -> int:
        return self.head.nc

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        outputs: list[torch.Tensor | None] = []
        for layer in self.model:
            if layer.f != -1:
                x = outputs[layer.f] if isinstance(layer.f, int) else [x if j == -1 else outputs[j] for j in layer.f]
            x = layer(x)
            outputs.append(x if layer.i in self.save else None)
        return x

    def fuse(self) -> Model:
        """Fold BatchNorm, RepConv branches and implicit layers; switches to eval mode."""
        self.eval()
        for module in self.modules():
            if isinstance(module, (Conv, RepConv, Detect)):
                module.fuse()
        return self

    def _initialize_weights(self) -> None:
        """The official training defaults: BatchNorm eps 1e-3, momentum 0.03."""
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = 1e-3
                module.momentum = 0.03

    def _initialize_biases(self) -> None:
        """Prior objectness (~8 objects per 640 image) and class biases (RetinaNet 3.3)."""
        head = self.head
        for conv, stride in zip(head.m, head.stride):
            bias = conv.bias.view(head.na, -1).detach().clone()
            bias[:, 4] += math.log(8 / (640 / stride) ** 2)
            bias[:, 5:] += math.log(0.6 / (head.nc - 0.99))
            conv.bias = nn.Parameter(bias.view(-1))
