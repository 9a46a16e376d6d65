"""The process graph of a config: which stages run, and where their sockets and rings live.

    capture.<stream>  --FrameRef-->  preprocess.<i>  --Batchable-->  inference  --det.<stream>-->  record.<stream>
    (ring per stream)                (ring per worker)               (PUB, via the supervisor's proxy) (SUB; events)

Offline captures take their credit from the same det.<stream> messages.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.endpoints import Endpoint
from pipeline.supervisor import StageSpec
from stages.settings import Settings


def capture_ring(runtime_dir: Path, stream: str) -> Path:
    return runtime_dir / f"ring-capture-{stream}"


def preprocess_ring(runtime_dir: Path, worker: int) -> Path:
    return runtime_dir / f"ring-preprocess-{worker}"


def live_frame(runtime_dir: Path, stream: str) -> Path:
    """The newest annotated JPEG of a stream, which the live view serves."""
    return runtime_dir / f"live-{stream}.jpg"


def preprocess_input(runtime_dir: Path, worker: int) -> Endpoint:
    return Endpoint("pull", True, f"ipc://{runtime_dir}/preprocess-{worker}.ipc")


def inference_input(runtime_dir: Path) -> Endpoint:
    return Endpoint("pull", True, f"ipc://{runtime_dir}/inference.ipc")


def stage_specs(settings: Settings) -> list[StageSpec]:
    specs = [StageSpec("capture", f"capture.{s.id}") for s in settings.streams]
    specs += [StageSpec("preprocess", f"preprocess.{i}") for i in range(settings.pipeline.preprocess_workers)]
    specs.append(StageSpec("inference", "inference"))
    specs += [StageSpec("record", f"record.{s.id}") for s in settings.streams]  # renders events even unrecorded
    return specs


def instance(name: str) -> str:
    """``capture.cam1`` -> ``cam1``."""
    return name.split(".", 1)[1]
