"""``[detector]``: the model and what NMS keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from stages.config.shipped import BUNDLED_WEIGHTS, REPO_ROOT

DEFAULT_EXCLUSIVE = [("vest", "no_vest"), ("hardhat", "no_hardhat")]


class DetectorSettings(BaseModel, extra="forbid"):
    """The model and what NMS keeps; shared by ``vestwatch detect`` and the daemon."""

    weights: Path = Field(
        BUNDLED_WEIGHTS,
        description=".pt (official YOLOv7), .safetensors or .onnx; a relative path not found here is the repository's",
    )
    device: str = Field("auto", description="cpu | cuda | cuda:N | auto")
    img_size: int = Field(640, ge=32, le=4096, description="letterbox size, a multiple of 32")
    conf: float = Field(0.25, ge=0.0, le=1.0, description="confidence threshold")
    iou: float = Field(0.45, ge=0.0, le=1.0, description="NMS IoU threshold")
    max_det: int = Field(300, ge=1, description="at most this many boxes per frame")
    classes: list[int] | None = Field(None, description="keep only these class ids")
    agnostic: bool = Field(False, description="NMS across classes")
    names: list[str] | None = Field(None, description="for weights that carry no class names")
    anchors: list[list[float]] | None = Field(
        None, description="per level, w,h pixel pairs: ONNX without the grid, if not YOLOv7's"
    )
    exclusive: list[tuple[str, str]] = Field(
        default_factory=lambda: list(DEFAULT_EXCLUSIVE),
        description="classes one object cannot be at once: of two overlapping boxes (IoU above exclusive_iou) the "
        "stronger stays. The default pairs apply where the model has both classes; listed pairs must.",
    )
    exclusive_iou: float = Field(
        0.5, ge=0.0, le=1.0, description="boxes of exclusive classes overlapping more than this are one object"
    )
    cuda_graphs: Literal["auto", "off"] = Field(
        "auto",
        description="a PyTorch model on a GPU replays its forward pass from CUDA graphs, one per batch size (padded "
        "to a power of two) and input shape: fewer kernel launches per batch; off: always eager",
    )

    @field_validator("img_size")
    @classmethod
    def _stride_multiple(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"must be a multiple of 32, got {value}")
        return value

    @field_validator("weights")
    @classmethod
    def _relative_to_repo(cls, value: Path) -> Path:
        return value if value.is_absolute() or value.exists() else REPO_ROOT / value
