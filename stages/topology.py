"""The process graph of a config: which stages run, and where their sockets and rings live.

    capture.<stream> --FrameRef--> preprocess.<i> --Batchable--> inference --inferred.<stream>--> stream.<stream>
    (ring per stream)              (ring per worker)             (PUB, via the supervisor's proxy)   (det., event.)
          |                                                                                             ^
          +------------------------- FrameRef of every frame (recorded streams) ------------------------+

Offline captures take their credit from the stream stage's det.<stream> messages.
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

from pipeline.endpoints import Endpoint
from pipeline.forkserver import ForkServer
from pipeline.plan import Plan, StageSpec
from pipeline.security import secure_client, secure_server, start_authenticator
from pipeline.stage import member_names
from stages.config import Settings


def capture_ring(runtime_dir: Path, stream: str) -> Path:
    return runtime_dir / f"ring-capture-{stream}"


def preprocess_ring(runtime_dir: Path, worker: int) -> Path:
    return runtime_dir / f"ring-preprocess-{worker}"


def frame_files(runtime_dir: Path) -> list[Path]:
    """Every ring and live frame in the runtime dir: removed when the daemon stops cleanly."""
    return [*runtime_dir.glob("ring-*"), *runtime_dir.glob("live-*.jpg")]


def live_frame(runtime_dir: Path, stream: str) -> Path:
    """The newest annotated JPEG of a stream, which the live view serves."""
    return runtime_dir / f"live-{stream}.jpg"


# copied packets queued between capture and the stream stage (each end): 10 s of a 30 fps camera, a few MiB
PACKET_HWM = 300


def record_input(runtime_dir: Path, stream: str) -> Endpoint:
    """Every captured frame (or, copying, the camera's every packet) of a recorded stream, for its
    stream stage (which records at the camera's rate, whatever inference keeps up with)."""
    return Endpoint("pull", True, f"ipc://{runtime_dir}/record-{stream}.ipc")


def preprocess_input(runtime_dir: Path, worker: int) -> Endpoint:
    return Endpoint("pull", True, f"ipc://{runtime_dir}/preprocess-{worker}.ipc")


def inference_link(settings: Settings, side: str) -> Endpoint:
    """The preprocess -> inference link as one side opens it: ``pull`` (inference) or ``push`` (preprocess).

    One host: ipc in the runtime dir. Two hosts: each host's config gives its own side
    (``pull+bind:tcp://0.0.0.0:5570`` on the GPU host, ``push+connect:tcp://gpu-host:5570``
    on the camera host); the other side is derived, so one host's config serves both there.
    """
    configured = settings.pipeline.inference
    link = (
        Endpoint.parse(configured)
        if configured
        else Endpoint("pull", True, f"ipc://{settings.runtime_dir}/inference.ipc")
    )
    return link if link.kind == side else link.peer(side)


def open_inference_link(
    settings: Settings, side: str, context: zmq.Context, hwm: int
) -> tuple[zmq.Socket, ThreadAuthenticator | None]:
    """The link's socket for ``side``; on tcp:// with ``pipeline.link_keys``, CURVE-authenticated with
    inference as the server. Returns the authenticator thread to stop, if this side runs one."""
    link = inference_link(settings, side)
    keys = settings.pipeline.link_keys if crosses_hosts(link) else None
    authenticators: list[ThreadAuthenticator] = []

    def secure(socket: zmq.Socket) -> None:
        if side == "pull":
            authenticators.append(start_authenticator(context))
            secure_server(socket, authenticators[0], keys, "link")
        else:
            secure_client(socket, keys)

    socket = link.open(context, hwm=hwm, prepare=secure if keys else None)
    return socket, (authenticators[0] if authenticators else None)


def crosses_hosts(link: Endpoint) -> bool:
    """A tcp:// link may reach another host, where this host's rings do not exist: pixels go inline."""
    return link.address.startswith("tcp://")


def detections_source(settings: Settings) -> Endpoint:
    """Where stream stages read ``inferred.<stream>``: this host's publish endpoint, or
    ``pipeline.detections`` when inference runs on another host."""
    configured = settings.pipeline.detections
    return Endpoint.parse(configured) if configured else Endpoint.parse(settings.publish).peer("sub")


def _subscriber(settings: Settings, context: zmq.Context, source: Endpoint, prefix: str) -> zmq.Socket:
    """A SUB socket on ``prefix`` from ``source``; a CURVE client with ``publish_keys``."""
    keys = settings.publish_keys
    socket = source.open(context, hwm=1000, prepare=(lambda s: secure_client(s, keys)) if keys else None)
    socket.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    return socket


def open_inferred(settings: Settings, context: zmq.Context, stream: str) -> zmq.Socket:
    """Inference's results for a stream's stage."""
    return _subscriber(settings, context, detections_source(settings), f"inferred.{stream}")


def open_detections(settings: Settings, context: zmq.Context, stream: str) -> zmq.Socket:
    """The stream stage's ``det.<stream>`` on this host, for an offline capture's credit."""
    return _subscriber(settings, context, Endpoint.parse(settings.publish).peer("sub"), f"det.{stream}")


def stage_specs(settings: Settings) -> list[StageSpec]:
    """This host's stage processes: every kind by default, those in ``pipeline.stages`` when the
    pipeline is split; captures and stream stages ``pipeline.cameras_per_process`` to a process."""
    per = settings.pipeline.cameras_per_process
    groups = ["+".join(s.id for s in settings.streams[i : i + per]) for i in range(0, len(settings.streams), per)]
    specs = [StageSpec("capture", f"capture.{group}") for group in groups]
    specs += [StageSpec("preprocess", f"preprocess.{i}") for i in range(settings.pipeline.preprocess_workers)]
    specs.append(StageSpec("inference", "inference"))
    specs += [StageSpec("stream", f"stream.{group}") for group in groups]
    return [spec for spec in specs if spec.kind in settings.pipeline.stages]


def plan(settings: Settings) -> Plan:
    """The stages a config asks for, each fingerprinted by the settings it reads at start.

    Thresholds are left out of inference's fingerprint: a reload applies them live, as
    overrides, instead of restarting the device owner.
    """
    common = settings.model_dump(mode="json", include={"runtime_dir", "publish", "publish_keys", "pipeline"})
    detector = settings.detector.model_dump(mode="json", exclude={"conf", "iou"})
    fingerprints = {}
    for spec in stage_specs(settings):
        kind, name = spec.kind, spec.name
        if kind in ("capture", "stream"):
            # what runs after inference is none of capture's business: editing a zone keeps the camera
            after = {"zones", "processors", "sinks"} if kind == "capture" else set()
            streams = [settings.stream(instance(member)).model_dump(mode="json", exclude=after) for member in
                       member_names(name)]  # fmt: skip
            extra = settings.model_dump(mode="json", include={"recordings_dir", "recording", "events"})
            extra["plugin_sections"] = settings.plugin_sections()
            fingerprints[name] = json.dumps([common, streams, extra if kind == "stream" else None], sort_keys=True)
        elif kind in ("preprocess", "inference"):
            fingerprints[name] = json.dumps([common, detector], sort_keys=True)
        else:
            raise ValueError(f"{name}: no fingerprint for stage kind {kind!r}: say what a restart of it depends on")
    overrides = {"*": {"conf": settings.detector.conf, "iou": settings.detector.iou}}
    return Plan(stage_specs(settings), fingerprints, [s.id for s in settings.streams], overrides)


def instance(name: str) -> str:
    """``capture.cam1`` -> ``cam1``."""
    return name.split(".", 1)[1]


FORKED_KINDS = {"capture", "preprocess", "stream"}  # one or more per camera; inference is one and owns CUDA


def fork_server(settings: Settings) -> ForkServer | None:
    """The fork server for the per-camera stages, preloaded with their modules and every stream
    plug-in's (``pipeline.fork_server``; None when off)."""
    if not settings.pipeline.fork_server:
        return None
    wanted = [e for e in entry_points(group="vestwatch.stages") if e.name in FORKED_KINDS]
    wanted += [*entry_points(group="vestwatch.processors"), *entry_points(group="vestwatch.sinks")]
    return ForkServer(FORKED_KINDS, sorted({entry.module for entry in wanted}))


NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU while the driver is loaded


def nvidia_gpu() -> bool:
    """An NVIDIA GPU with its driver loaded, found without importing torch or CUDA."""
    return NVIDIA_GPUS.is_dir() and any(NVIDIA_GPUS.iterdir())


def letterbox_in_inference(settings: Settings) -> bool:
    """Where frames are letterboxed (``pipeline.letterbox``), decided the same way in preprocess and
    inference without importing torch: ``auto`` takes inference when a GPU is there for a PyTorch
    model and inference reads this host's capture rings (not across a tcp:// link). A GPU that
    PyTorch cannot use only moves the same letterbox into inference on the CPU."""
    pipeline = settings.pipeline
    if pipeline.letterbox != "auto":
        return pipeline.letterbox == "inference"
    same_host = not crosses_hosts(inference_link(settings, "push"))
    gpu = settings.detector.device != "cpu" and nvidia_gpu()
    return same_host and gpu and settings.detector.weights.suffix != ".onnx"
