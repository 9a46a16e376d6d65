"""What the supervisor is asked to run, and how: the stages a config plans (``stages.topology``
makes the plan) and the supervisor's configuration, built by ``vestwatch run`` from the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.endpoints import Endpoint
from pipeline.forkserver import ForkServer


@dataclass(frozen=True)
class StageSpec:
    """A stage process to start: which kind of stage, under which name."""

    kind: str  # entry point name in the vestwatch.stages group
    name: str  # unique process name, e.g. capture.cam1, or capture.cam1+cam2 for two stages in one


@dataclass(frozen=True)
class Plan:
    """What a config asks for: the stages (with a fingerprint of the settings each depends on),
    the stream ids and the base overrides. ``reload`` diffs the running stages against it, and the
    settings the daemon itself read at start (``held``), which no restart of a stage applies."""

    specs: list[StageSpec]
    fingerprints: dict[str, str]  # process name -> its settings, serialised; a change restarts the process
    streams: list[str]
    overrides: dict[str, dict]
    held: dict[str, str] = field(default_factory=dict)  # setting -> its value, serialised, as the daemon holds it
    fixed: frozenset[str] = frozenset()  # of those, the daemon's sockets: a reload that changes one is refused


@dataclass(frozen=True)
class SupervisorConfig:
    """What the supervisor runs, and how it watches, restarts, publishes and answers control."""

    specs: list[StageSpec]  # the stages to start
    runtime_dir: Path  # its sockets (heartbeats, bus, publish input) live there
    config_file: Path | None  # what the stages read their settings from (VWSTAGE_CONFIG)
    stall_s: float = 15.0  # a stage whose process sends no heartbeat this long is killed and restarted
    step_timeout_s: float = 120.0  # a stage in one step of its work this long is killed and restarted
    start_grace_s: float = 300.0  # a stage may take this long to start (imports, setup) before it is restarted
    stop_grace_s: float = 8.0  # for a stage to stop on SIGTERM before it is killed
    backoff_s: tuple[float, float] = (0.5, 30.0)  # the first and the longest delay before a restart
    on_ready: Callable[[], None] | None = None  # called once, when every stage has heartbeated
    control: Endpoint | None = None  # where ``vestwatch ctl`` talks to it; None: no control socket
    control_keys: Path | None = None  # CURVE keys of the control socket
    publish_keys: Path | None = None  # CURVE keys of the publish socket
    settable: dict[str, Callable] | None = None  # overrides ``ctl set`` may change live, each with its parser
    streams: list[str] | None = None  # stream ids, for the publish topics and ``ctl``
    publish: Endpoint | None = None  # where subscribers read; None: no publish proxy
    publish_hwm: int = 1000  # messages queued per subscriber
    plan: Callable[[], Plan] | None = None  # re-reads the config on reload (SIGHUP or ctl reload)
    forkserver: ForkServer | None = None  # the stage kinds it serves are forked from it, not started afresh
