"""The config schema of vestwatch's stages, read from ``config.toml`` by ``pipeline.settings``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from pipeline.settings import EnvOverridesFile

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_WEIGHTS = REPO_ROOT / "weights" / "vestwatch-yolov7-tiny.safetensors"
DEFAULT_CONFIG = REPO_ROOT / "config.toml"


class DetectorSettings(BaseModel, extra="forbid"):
    """The model and what NMS keeps; shared by ``vestwatch detect`` and the daemon."""

    weights: Path = BUNDLED_WEIGHTS
    device: str = "auto"  # cpu | cuda | cuda:N | auto
    img_size: int = Field(640, ge=32, le=4096)
    conf: float = Field(0.25, ge=0.0, le=1.0)
    iou: float = Field(0.45, ge=0.0, le=1.0)
    max_det: int = Field(300, ge=1)
    classes: list[int] | None = None  # keep only these class ids
    agnostic: bool = False  # NMS across classes
    names: list[str] | None = None  # for weights that carry no class names

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


class Settings(EnvOverridesFile):
    detector: DetectorSettings = DetectorSettings()
