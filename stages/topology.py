"""The process graph of a config: which stages run, and where their sockets and rings live.

    capture.<stream> --FrameRef--> preprocess.<i> --Batchable--> inference --inferred.<stream>--> stream.<stream>
    (ring per stream)              (ring per worker)             (PUB, via the supervisor's proxy)   (det., event.)
          |                                                                                             ^
          +------------------------- FrameRef of every frame (recorded streams) ------------------------+

Offline captures take their credit from the stream stage's det.<stream> messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import zmq
from pydantic_core import to_jsonable_python
from zmq.auth.thread import ThreadAuthenticator

from pipeline.endpoints import Endpoint
from pipeline.forkserver import ForkServer
from pipeline.plan import Plan, StageSpec
from pipeline.security import secure_client, secure_server, start_authenticator
from pipeline.stage import member_names
from stages.config import PipelineSettings, Settings, StreamSettings


def capture_ring(runtime_dir: Path, stream: str) -> Path:
    return runtime_dir / f"ring-capture-{stream}"


def record_cursor(runtime_dir: Path, stream: str) -> Path:
    """How far the stream stage has secured the capture ring's frames to record (capture's credit)."""
    return runtime_dir / f"ring-capture-{stream}.recorded"


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
INFERENCE_QUEUE_BATCHES = 4  # inference's input queue holds this many batches of frames
PREPROCESS_OUT_BATCHES = 2  # and preprocess's queue to it this many


def refs_queued(pipeline: PipelineSettings) -> int:
    """The frame refs capture may queue to preprocess: half a ring, so that preprocess reads a
    queued frame before capture overwrites it."""
    return max(2, pipeline.ring_slots // 2)


def frames_in_flight(pipeline: PipelineSettings) -> int:
    """The most frames of one stream on their way from capture to results, every queue full (an
    inference stopped for seconds): the refs capture queues and preprocess holds, the frames
    preprocess queues to inference and inference holds, and the batch being run. The stream stage
    keeps this many awaiting their results (copied out only once capture nears them), so that a
    late result still finds the picture its event's snapshot is made from."""
    batches = PREPROCESS_OUT_BATCHES + INFERENCE_QUEUE_BATCHES + 1
    return refs_queued(pipeline) + pipeline.ring_slots + batches * pipeline.max_batch + 2  # +1 per stream queue


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


@dataclass(frozen=True)
class Reads:
    """What a stage kind reads of the config when it starts: a reload restarts a stage when one of these
    changed, and only then. One declaration per kind, so that the rule cannot drift from a list kept by hand
    (``tests/stages/test_topology.py`` checks it against what each stage really reads at start)."""

    settings: frozenset[str]  # top-level fields, or a part of one (``recording.video``)
    stream: frozenset[str] = frozenset()  # of each of its own streams: fields, or properties (``records``)
    live: frozenset[str] = frozenset()  # parts of ``settings`` a reload sends as overrides, without a restart
    plugin_sections: bool = False  # the sections of its streams' own processors and sinks (``[tally]``)


LINKS = frozenset({"runtime_dir", "pipeline"})  # every stage's sockets, rings and queue bounds
SUBSCRIBER = frozenset({"publish", "publish_keys"})  # a stage that reads this host's publish socket
LETTERBOX = frozenset({"detector.img_size", "detector.device", "detector.weights"})  # letterbox_in_inference
READS = {
    "capture": Reads(
        LINKS | SUBSCRIBER | {"recording.video"},  # offline credit; the camera's own packets
        # not its stream's place in the list, which picks its preprocess worker: a kept capture keeps its
        # worker, which only balances the load
        frozenset({"id", "url", "realtime", "loop", "fps", "detect_fps", "records"}),
    ),
    "preprocess": Reads(LINKS | LETTERBOX),
    "inference": Reads(LINKS | {"publish", "detector"}, live=frozenset({"detector.conf", "detector.iou"})),
    "stream": Reads(
        LINKS | SUBSCRIBER | {"site", "events", "recordings_dir", "recording", "webhooks", "mqtt", "privacy"}
        | {"http", "http_url", "http_tls_cert"},  # the links in events (Settings.link)
        frozenset(StreamSettings.model_fields),
        plugin_sections=True,
    ),
}  # fmt: skip

# What the daemon process itself reads, once, at start (its sockets, the supervisor's clock, the HTTP server
# and the review page): a reload cannot apply a change to these. It refuses a change to the sockets by which
# the stages reach the daemon (DAEMON_SOCKETS), and names the others as waiting for a restart.
DAEMON_SOCKETS = frozenset({"runtime_dir", "publish", "publish_keys", "control", "control_keys"})
DAEMON_READS = DAEMON_SOCKETS | {
    "http", "http_password_hash", "http_tls_cert", "http_tls_key", "http_url", "recordings_dir",
    "pipeline.stall_s", "pipeline.step_timeout_s", "pipeline.start_grace_s", "pipeline.publish_hwm",
    "pipeline.fork_server", "privacy",
}  # fmt: skip


def picked(dumped: dict[str, Any], paths: Iterable[str], live: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The parts of a config dumped as JSON at ``paths`` (``recording.video``), less the ``live`` ones."""
    found = {}
    for path in sorted(paths):
        value: Any = dumped
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None  # a section that is off ([mqtt]) is None
        if isinstance(value, dict):
            value = {key: v for key, v in value.items() if f"{path}.{key}" not in live}
        found[path] = value
    return found


def fingerprint(settings: Settings, dumped: dict[str, Any], spec: StageSpec) -> str:
    """What ``spec``'s process reads of ``settings`` at start, serialised: its ``READS``, of its streams."""
    reads = READS.get(spec.kind)
    if reads is None:
        raise ValueError(f"{spec.name}: no READS for stage kind {spec.kind!r}: say what a restart of it depends on")
    per_stream = reads.stream or reads.plugin_sections
    streams = [settings.stream(instance(member)) for member in member_names(spec.name)] if per_stream else []
    own = [{field: to_jsonable_python(getattr(s, field)) for field in sorted(reads.stream)} for s in streams]
    sections = settings.plugin_sections() if reads.plugin_sections else {}
    plugins = [{name: sections[name] for name in [*s.processors, *s.sinks] if name in sections} for s in streams]
    return json.dumps([picked(dumped, reads.settings, reads.live), own, plugins], sort_keys=True)


def plan(settings: Settings) -> Plan:
    """The stages a config asks for, each fingerprinted by what its kind ``READS``; the thresholds, which
    a reload applies live as overrides instead of restarting the device owner; what the daemon holds."""
    dumped = settings.model_dump(mode="json")
    specs = stage_specs(settings)
    fingerprints = {spec.name: fingerprint(settings, dumped, spec) for spec in specs}
    overrides = {"*": {"conf": settings.detector.conf, "iou": settings.detector.iou}}
    held = {path: json.dumps(value, sort_keys=True) for path, value in picked(dumped, DAEMON_READS).items()}
    return Plan(specs, fingerprints, [s.id for s in settings.streams], overrides, held, DAEMON_SOCKETS)


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
