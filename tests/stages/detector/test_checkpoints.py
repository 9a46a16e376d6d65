"""Official YOLOv7 checkpoints, written as train.py writes them, load without the yolov7 code base."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from stages.detector.checkpoints import WeightsError, load_model, save_weights
from stages.detector.heads import Detect, IDetect
from stages.detector.layers import MP, SP, SPPCSPC, Concat, Conv, ImplicitA, ImplicitM, RepConv
from stages.detector.model import Model
from tests.conftest import make_model

OFFICIAL_MODULES = {
    "models.common": [Conv, Concat, MP, SP, SPPCSPC, RepConv, ImplicitA, ImplicitM],
    "models.yolo": [Detect, IDetect, Model],
}


@pytest.fixture
def official_code_base() -> Iterator[dict[type, type]]:
    """Stand-ins for the yolov7 repository's classes, living under its module paths while pickling.

    Each is a subclass of ours named ``models.common.Conv`` etc., so a pickle records
    exactly the class paths an official checkpoint records. They are removed again
    before loading, as on a machine without the yolov7 code base.
    """
    aliases: dict[type, type] = {}
    created = {"models": types.ModuleType("models")}
    for module_name, classes in OFFICIAL_MODULES.items():
        module = created[module_name] = types.ModuleType(module_name)
        for cls in classes:
            alias = type(cls.__name__, (cls,), {"__module__": module_name})
            setattr(module, cls.__name__, alias)
            aliases[cls] = alias
    sys.modules.update(created)
    yield aliases
    for name in created:
        sys.modules.pop(name, None)


def as_official(model: Model, aliases: dict[type, type]) -> Model:
    for module in model.modules():
        if type(module) in aliases:
            module.__class__ = aliases[type(module)]
    return model


def save_official(path: Path, model: Model, aliases: dict[type, type], key: str = "model") -> None:
    """The dict official train.py saves: half-precision model objects, numpy fitness, optimizer state."""
    checkpoint = {
        "epoch": 299,
        "best_fitness": np.array([0.512]),
        "training_results": "results",
        "model": as_official(make_model("yolov7-tiny", seed=7), aliases).half() if key == "ema" else None,
        "ema": None,
        "updates": 1000,
        "optimizer": None,
        "wandb_id": None,
    }
    checkpoint[key] = as_official(model, aliases).half()
    torch.save(checkpoint, path)


@pytest.mark.parametrize("cfg", ["yolov7-tiny", "yolov7"])
def test_official_checkpoint_loads_and_matches(cfg: str, tmp_path: Path, official_code_base) -> None:
    original = make_model(cfg)
    expected_model = make_model(cfg).half().float()  # the checkpoint stores fp16 weights
    path = tmp_path / "best.pt"
    save_official(path, original, official_code_base)
    for name in ("models", "models.common", "models.yolo"):
        sys.modules.pop(name)

    loaded = load_model(path)

    assert type(loaded) is Model
    assert loaded.names == ["vest", "no_vest", "person"]
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded.fuse()(x), expected_model.fuse()(x), rtol=1e-3, atol=1e-3)


def test_ema_is_preferred_over_model(tmp_path: Path, official_code_base) -> None:
    path = tmp_path / "last.pt"
    save_official(path, make_model(seed=3), official_code_base, key="ema")
    loaded = load_model(path)
    expected = make_model(seed=3).half().float()
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected.eval()(x), rtol=1e-3, atol=1e-3)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_in_a_checkpoint_is_refused_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match=r"refused: it needs (posix|os)\.system"):
        load_model(path)
    assert not marker.exists()


def test_unmapped_yolov7_class_is_named(tmp_path: Path) -> None:
    module = types.ModuleType("models.common")
    module.ReOrg = type("ReOrg", (torch.nn.Module,), {"__module__": "models.common"})
    sys.modules.update({"models": types.ModuleType("models"), "models.common": module})
    try:
        path = tmp_path / "w6.pt"
        torch.save({"model": module.ReOrg()}, path)
    finally:
        sys.modules.pop("models.common")
        sys.modules.pop("models")
    with pytest.raises(WeightsError, match=r"models\.common\.ReOrg"):
        load_model(path)


def test_our_format_round_trips(tmp_path: Path) -> None:
    model = make_model()
    path = tmp_path / "ours.safetensors"
    save_weights(model, path, half=False)
    loaded = load_model(path)
    assert loaded.names == model.names and loaded.yaml == model.yaml
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.pt", b"not a checkpoint", "not a readable PyTorch checkpoint"),
        ("broken.safetensors", b"\x00" * 16, "not a readable safetensors file"),
        ("model.bin", b"", "unknown weights type"),
    ],
)
def test_bad_weight_files_get_one_clear_error(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=message) as caught:
        load_model(path)
    assert str(path) in str(caught.value)


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "absent.pt")
