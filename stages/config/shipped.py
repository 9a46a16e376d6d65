"""Where what ships with vestwatch lies: the repository, its bundled model and the config that runs as shipped."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_WEIGHTS = REPO_ROOT / "weights" / "vestwatch-yolov7-tiny.safetensors"
DEFAULT_CONFIG = REPO_ROOT / "config.toml"
