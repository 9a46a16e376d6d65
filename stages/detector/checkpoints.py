"""Load and save detector weights: official YOLOv7 ``.pt`` checkpoints and our ``.safetensors``.

An official training checkpoint is a pickled dict whose ``model``/``ema`` is a
half-precision ``models.yolo.Model`` object. It is read with torch's weights-only
unpickler, which rebuilds only the globals we list: each official class path is
aliased onto our attribute-compatible class, plus the torch layers and numpy
containers such a file holds. Anything else (``os.system``, an unsupported
YOLOv7 module) is refused with an error that names it; nothing from the file runs.

Our own format is a safetensors file: the state dict plus the cfg and class
names in its metadata, so it needs no pickle at all.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from stages.detector.heads import Detect, IDetect
from stages.detector.layers import MP, SP, SPPCSPC, Concat, Conv, ImplicitA, ImplicitM, RepConv
from stages.detector.model import Model

OFFICIAL_CLASSES: dict[str, object] = {
    "models.yolo.Model": Model,
    "models.yolo.Detect": Detect,
    "models.yolo.IDetect": IDetect,
    "models.common.Conv": Conv,
    "models.common.Concat": Concat,
    "models.common.MP": MP,
    "models.common.SP": SP,
    "models.common.SPPCSPC": SPPCSPC,
    "models.common.RepConv": RepConv,
    "models.common.ImplicitA": ImplicitA,
    "models.common.ImplicitM": ImplicitM,
    # numpy moved its core module in 2.0; checkpoints name whichever wrote them
    "numpy.core.multiarray._reconstruct": np._core.multiarray._reconstruct,
    "numpy._core.multiarray._reconstruct": np._core.multiarray._reconstruct,
    "numpy.core.multiarray.scalar": np._core.multiarray.scalar,
    "numpy._core.multiarray.scalar": np._core.multiarray.scalar,
}
TORCH_AND_NUMPY_GLOBALS: list[object] = [
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.SiLU,
    nn.LeakyReLU,
    nn.ReLU,
    nn.Hardswish,
    nn.Identity,
    nn.MaxPool2d,
    nn.Upsample,
    nn.Sequential,
    nn.ModuleList,
    np.ndarray,
    np.dtype,
    *(getattr(np.dtypes, name) for name in np.dtypes.__all__),
]
UNSUPPORTED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
FORMAT_TAG = "vestwatch-detector"


class WeightsError(ValueError):
    """Weights that cannot be loaded; the message names the file and the reason."""


def load_official_checkpoint(path: Path) -> Model:
    """An official YOLOv7 ``train.py`` checkpoint as our (unfused, fp32, eval) ``Model``."""
    allowed = [(cls, name) for name, cls in OFFICIAL_CLASSES.items()] + TORCH_AND_NUMPY_GLOBALS
    try:
        with torch.serialization.safe_globals(allowed):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = UNSUPPORTED_GLOBAL.search(str(error))
        if found:
            culprit = found.group(1)
            raise WeightsError(f"{path}: refused: it needs {culprit}, which is not a YOLOv7 class we load") from None
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint (damaged or not a pickle)") from None
    except (RuntimeError, EOFError) as error:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({error})") from None
    model = None
    if isinstance(checkpoint, dict):
        model = checkpoint.get("ema") if checkpoint.get("ema") is not None else checkpoint.get("model")
    if not isinstance(model, Model):
        raise WeightsError(f"{path}: no 'model' or 'ema' YOLOv7 model in this checkpoint")
    return _normalise(model.float().eval())


def _normalise(model: Model) -> Model:
    """Fill in what older pickles lack so that our forward runs on them."""
    for module in model.modules():
        if isinstance(module, Conv) and "bn" not in module._modules:  # saved after the official fuse()
            module.bn = nn.Identity()
        elif isinstance(module, nn.Upsample) and not hasattr(module, "recompute_scale_factor"):
            module.recompute_scale_factor = None  # attribute added in torch 1.11
    if not getattr(model, "names", None):
        model.names = [str(i) for i in range(model.nc)]
    model.names = [str(name) for name in model.names]
    return model


def save_weights(model: Model, path: Path, half: bool = True) -> None:
    """Write our format: the unfused state dict (fp16 by default) with cfg and names as metadata."""
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT_TAG, "cfg": json.dumps(model.yaml), "names": json.dumps(list(model.names))}
    save_file(state, str(path), metadata=metadata)


def load_weights_file(path: Path) -> Model:
    """Our ``.safetensors`` format as an (unfused, fp32, eval) ``Model``."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for damaged headers
        raise WeightsError(f"{path}: not a readable safetensors file ({error})") from None
    if metadata.get("format") != FORMAT_TAG:
        raise WeightsError(f"{path}: a safetensors file without vestwatch detector metadata (cfg, names)")
    model = Model(json.loads(metadata["cfg"]), names=json.loads(metadata["names"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{path}: weights do not fit the cfg (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()


def load_model(path: str | Path) -> Model:
    """A PyTorch model from ``.pt``/``.pth`` (official) or ``.safetensors`` (ours)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix in (".pt", ".pth"):
        return load_official_checkpoint(path)
    if path.suffix == ".safetensors":
        return load_weights_file(path)
    raise WeightsError(f"{path}: unknown weights type {path.suffix!r} (expected .pt, .pth, .safetensors or .onnx)")
