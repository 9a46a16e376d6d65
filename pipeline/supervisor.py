"""The supervisor: starts one process per stage, watches heartbeats, restarts what dies or hangs.

A stage that exits, or sends no heartbeat for ``stall_s``, is restarted with
exponential backoff; the others are never touched. A process may run several stages of
one kind (``capture.cam1+cam2``, see ``pipeline.stage.run_together``): each member
heartbeats and is reported under its own name, and they are restarted together. SIGTERM stops every stage (they
close their files) and exits 0 within ``stop_grace_s``; stragglers are killed. Under
systemd it reports READY once every stage has sent a heartbeat, and pings WATCHDOG
while it runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from pipeline import systemd
from pipeline.control import ControlService
from pipeline.endpoints import Endpoint
from pipeline.forkserver import ForkedProcess, ForkServer, die_with_parent
from pipeline.messages import Heartbeat, MessageError
from pipeline.publish import PublishProxy
from pipeline.security import secure_server, start_authenticator
from pipeline.stage import member_names

STATE_BROADCAST_S = 1.0  # restarted stages learn the live overrides within this

log = logging.getLogger("vestwatch.supervisor")


@dataclass(frozen=True)
class StageSpec:
    kind: str  # entry point name in the vestwatch.stages group
    name: str  # unique process name, e.g. capture.cam1, or capture.cam1+cam2 for two stages in one


@dataclass(frozen=True)
class Plan:
    """What a config asks for: the stages (with a fingerprint of the settings each depends on),
    the stream ids and the base overrides. ``reload`` diffs the running stages against it."""

    specs: list[StageSpec]
    fingerprints: dict[str, str]  # process name -> its settings, serialised; a change restarts the process
    streams: list[str]
    overrides: dict[str, dict]


@dataclass
class Member:
    """A stage in a process, as its heartbeats tell it."""

    last_heartbeat: float = 0.0
    state: str = "starting"
    stats: dict = field(default_factory=dict)


@dataclass
class StageProcess:
    spec: StageSpec
    process: subprocess.Popen | ForkedProcess | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    restarts: int = 0
    members: dict[str, Member] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.members = {name: Member() for name in member_names(self.spec.name)}

    def begin(self) -> None:
        """A fresh start: every member starting, given ``stall_s`` from now to heartbeat."""
        self.started = time.monotonic()
        for member in self.members.values():
            member.state, member.last_heartbeat = "starting", self.started

    @property
    def heard(self) -> bool:
        """Running, and every member has heartbeated since it started."""
        return self.process is not None and all(m.last_heartbeat > self.started for m in self.members.values())

    @property
    def silent_s(self) -> float:
        """Since the least recent heartbeat of a member."""
        return time.monotonic() - min(member.last_heartbeat for member in self.members.values())


class Supervisor:
    def __init__(
        self,
        specs: list[StageSpec],
        runtime_dir: Path,
        config: Path | None,
        stall_s: float = 15.0,
        stop_grace_s: float = 8.0,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        on_ready: Callable[[], None] | None = None,
        control: Endpoint | None = None,
        control_keys: Path | None = None,
        publish_keys: Path | None = None,
        settable: dict[str, Callable] | None = None,
        streams: list[str] | None = None,
        publish: Endpoint | None = None,
        publish_hwm: int = 1000,
        plan: Callable[[], Plan] | None = None,
        forkserver: ForkServer | None = None,
    ) -> None:
        self.stages = {spec.name: StageProcess(spec) for spec in specs}  # by process name
        self.process_of = self._members()
        self.forkserver = forkserver  # the stage kinds it serves are forked from it, not started afresh
        self.runtime_dir = runtime_dir
        self.config = config
        self.stall_s = stall_s
        self.stop_grace_s = stop_grace_s
        self.backoff_s = backoff_s
        self.on_ready = on_ready
        self.heartbeat_endpoint = Endpoint("pull", True, f"ipc://{runtime_dir}/supervisor.ipc")
        self.bus_endpoint = Endpoint("pub", True, f"ipc://{runtime_dir}/bus.ipc")
        self.publish = publish
        self.publish_hwm = publish_hwm
        self.control_endpoint = control
        self.control_keys = control_keys
        self.publish_keys = publish_keys
        self.streams = list(streams or [])
        self.plan = plan  # re-reads the config on reload (SIGHUP or ctl reload)
        self.fingerprints: dict[str, str] = plan().fingerprints if plan else {}
        self.reload_requested = False
        self.control = ControlService(settable or {}, lambda: self.streams, self.status, self.reload if plan else None)
        self.started = time.monotonic()
        self.stopping = False
        self.ready = False
        self.bad_messages = 0
        self.proxy: PublishProxy | None = None

    def _members(self) -> dict[str, str]:
        """Stage name -> the name of the process that runs it."""
        return {member: name for name, stage in self.stages.items() for member in stage.members}

    def _spawn(self, stage: StageProcess) -> None:
        env = {
            **os.environ,
            "VWSTAGE_HEARTBEAT": self.heartbeat_endpoint.peer("push").text,
            "VWSTAGE_BUS": self.bus_endpoint.peer("sub").text,
            "VWSTAGE_CONFIG": str(self.config) if self.config else "",
        }
        env.pop("NOTIFY_SOCKET", None)  # only the supervisor talks to systemd
        if self.publish is not None:
            env["VWSTAGE_PUBLISH"] = self.publish_input.peer("pub").text
        if self.forkserver and stage.spec.kind in self.forkserver.kinds:
            try:
                stage.process = self.forkserver.spawn(stage.spec.kind, stage.spec.name, env)
            except (OSError, EOFError) as error:  # the fork server died (killed for memory?): it is started again
                stage.started = time.monotonic()
                self._schedule_restart(stage, f"could not be forked ({type(error).__name__}: {error})")
                return
        else:
            stage.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.worker", stage.spec.kind, stage.spec.name],
                env=env,
                preexec_fn=die_with_parent,
            )
        stage.begin()
        log.info("started %s (pid %d)", stage.spec.name, stage.process.pid)

    def _schedule_restart(self, stage: StageProcess, why: str) -> None:
        if time.monotonic() - stage.started > 60:
            stage.failures = 0  # it ran well for a while: start the backoff afresh
        delay = min(self.backoff_s[1], self.backoff_s[0] * 2**stage.failures)
        stage.failures += 1
        stage.restarts += 1
        stage.restart_at = time.monotonic() + delay
        stage.process = None
        for member in stage.members.values():
            member.state = "restarting"
        log.warning("%s %s; restarting in %.1f s", stage.spec.name, why, delay)

    @property
    def publish_input(self) -> Endpoint:
        return Endpoint("xsub", True, f"ipc://{self.runtime_dir}/publish.ipc")

    def _topics(self) -> list[str]:
        return [f"{kind}.{stream}" for stream in self.streams for kind in ("det", "event", "inferred")]

    def status(self) -> dict:
        """Every stage's state, pid, restarts and last reported figures."""
        now = time.monotonic()
        return {
            "uptime_s": round(now - self.started, 1),
            "bad_subscriptions": self.proxy.refused if self.proxy else 0,
            "subscribers_hung_up": self.proxy.hung_up if self.proxy else 0,
            "stages": {
                name: {
                    "state": member.state,
                    "pid": stage.process.pid if stage.process else None,
                    "restarts": stage.restarts,
                    "heartbeat_age_s": round(now - member.last_heartbeat, 1),
                    "stats": member.stats,
                }
                for stage in self.stages.values()
                for name, member in stage.members.items()
            },
        }

    def _receive_heartbeats(self, socket: zmq.Socket) -> None:
        while True:
            try:
                payload = socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                beat = Heartbeat.decode(payload)
            except MessageError as error:
                self.bad_messages += 1
                log.warning("dropped a malformed heartbeat (%s); %d so far", error, self.bad_messages)
                continue
            stage = self.stages.get(self.process_of.get(beat.stage, ""))
            if stage and stage.process and stage.process.pid == beat.pid:
                member = stage.members[beat.stage]
                member.last_heartbeat = time.monotonic()
                member.state, member.stats = beat.state, beat.stats

    def _watch(self) -> None:
        now = time.monotonic()
        for stage in self.stages.values():
            if stage.process is None:
                if now >= stage.restart_at and not self.stopping:
                    self._spawn(stage)
                continue
            code = stage.process.poll()
            if code is not None:
                self._schedule_restart(stage, f"exited with code {code}")
            elif stage.silent_s > self.stall_s:
                log.warning("%s stalled: no heartbeat for %.1f s; killing it", stage.spec.name, stage.silent_s)
                self._stop_processes([stage], grace_s=2.0)
                self._schedule_restart(stage, "stalled")
        if not self.ready and all(stage.heard for stage in self.stages.values()):
            self.ready = True
            systemd.notify("READY=1")
            if self.on_ready:
                self.on_ready()

    def _stop_processes(self, stages: list[StageProcess], grace_s: float) -> None:
        running = [s for s in stages if s.process and s.process.poll() is None]
        for stage in running:
            stage.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for stage in running:
            try:
                stage.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", stage.spec.name, grace_s)
                stage.process.kill()
                stage.process.wait()

    def reload(self) -> dict:
        """Apply a re-read config: start added stages, stop removed ones, restart changed ones."""
        try:
            plan = self.plan()
        except ValueError as error:  # a bad config keeps the running one
            log.error("reload refused, keeping the running config: %s", error)
            raise
        wanted = {spec.name: spec for spec in plan.specs}
        removed = [s for name, s in self.stages.items() if name not in wanted]
        changed = [
            s
            for name, s in self.stages.items()
            if name in wanted and plan.fingerprints.get(name) != self.fingerprints.get(name)
        ]
        self._stop_processes(removed + changed, grace_s=self.stop_grace_s)
        for stage in removed:
            del self.stages[stage.spec.name]
        for stage in changed:
            stage.process, stage.restart_at, stage.failures = None, 0.0, 0
        added = [name for name in wanted if name not in self.stages]
        for name in added:
            self.stages[name] = StageProcess(wanted[name])
        self.process_of = self._members()
        self.fingerprints, self.streams = plan.fingerprints, plan.streams
        self.control.reset(plan.overrides)
        summary = {
            "added": added,
            "removed": [s.spec.name for s in removed],
            "restarted": [s.spec.name for s in changed],
        }
        log.info("reloaded: %s", summary)
        return summary

    def request_reload(self, *_: object) -> None:
        self.reload_requested = True

    def request_stop(self, *_: object) -> None:
        self.stopping = True

    def _answer(self, control: zmq.Socket) -> None:
        """One control request in, one reply out: a REP socket must alternate, whatever arrived."""
        reply = self.control.handle(control.recv_multipart())
        try:
            control.send(reply)
        except zmq.ZMQError as error:  # the client vanished; REP resets with the next request
            log.warning("control: reply not sent (%s)", error)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        context = zmq.Context()
        socket = self.heartbeat_endpoint.open(context, hwm=1000)
        bus = self.bus_endpoint.open(context, hwm=100)
        authenticator = start_authenticator(context) if self.control_keys or self.publish_keys else None
        proxy = None
        if self.publish is not None:
            self.proxy = PublishProxy(
                context,
                self.publish_input,
                self.publish,
                self.publish_hwm,
                self._topics,
                self.publish_keys,
                authenticator,
            )
            proxy = self.proxy.start()
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        control = None
        if self.control_endpoint is not None:
            keys = self.control_keys
            control = self.control_endpoint.open(
                context,
                hwm=100,
                prepare=(lambda s: secure_server(s, authenticator, keys, "control")) if keys else None,
            )
            poller.register(control, zmq.POLLIN)
        watchdog = systemd.watchdog_interval()
        last_ping = last_broadcast = 0.0
        version = self.control.version
        try:
            while not self.stopping:
                if self.reload_requested and self.plan is not None:
                    self.reload_requested = False
                    with contextlib.suppress(ValueError):  # logged by reload()
                        self.reload()
                    self._receive_heartbeats(socket)  # what came in meanwhile, before judging silence
                self._watch()
                ready = dict(poller.poll(200))
                if socket in ready:
                    self._receive_heartbeats(socket)
                if control is not None and control in ready:
                    self._answer(control)
                if version != self.control.version or time.monotonic() - last_broadcast > STATE_BROADCAST_S:
                    bus.send(self.control.state.encode())
                    version, last_broadcast = self.control.version, time.monotonic()
                if watchdog and time.monotonic() - last_ping > watchdog:
                    systemd.notify("WATCHDOG=1")
                    last_ping = time.monotonic()
            systemd.notify("STOPPING=1")
            log.info("stopping %d stages", len(self.stages))
            self._stop_processes(list(self.stages.values()), self.stop_grace_s)
            return 0
        finally:
            if authenticator is not None:
                authenticator.stop()
            for own in (socket, bus, control):  # the proxy thread closes its own when term() interrupts it
                if own is not None:
                    own.close(0)
            context.term()
            if proxy is not None:
                proxy.join(2)
