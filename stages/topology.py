"""The process graph of a config: which stages run, and where their sockets and rings live.

    capture.<stream>  --FrameRef-->  preprocess.<i>  --Batchable-->  inference  --det.<stream>-->  record.<stream>
    (ring per stream)                (ring per worker)               (PUB, via the supervisor's proxy) (SUB; events)

Offline captures take their credit from the same det.<stream> messages.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.endpoints import Endpoint
from pipeline.supervisor import Plan, StageSpec
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


def plan(settings: Settings) -> Plan:
    """The stages a config asks for, each fingerprinted by the settings it reads at start.

    Thresholds are left out of inference's fingerprint: a reload applies them live, as
    overrides, instead of restarting the device owner.
    """
    common = settings.model_dump(mode="json", include={"runtime_dir", "publish", "pipeline"})
    detector = settings.detector.model_dump(mode="json", exclude={"conf", "iou"})
    fingerprints = {}
    for spec in stage_specs(settings):
        kind, name = spec.kind, spec.name
        if kind in ("capture", "record"):
            stream = settings.stream(instance(name)).model_dump(mode="json")
            extra = settings.model_dump(mode="json", include={"recordings_dir", "recording", "events"})
            fingerprints[name] = json.dumps([common, stream, extra if kind == "record" else None], sort_keys=True)
        else:
            fingerprints[name] = json.dumps([common, detector], sort_keys=True)
    overrides = {"*": {"conf": settings.detector.conf, "iou": settings.detector.iou}}
    return Plan(stage_specs(settings), fingerprints, [s.id for s in settings.streams], overrides)


def instance(name: str) -> str:
    """``capture.cam1`` -> ``cam1``."""
    return name.split(".", 1)[1]
