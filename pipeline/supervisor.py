"""The supervisor: starts one process per stage, watches heartbeats, restarts what dies or hangs.

A stage that exits, or is hung (``StageProcess.hung``: silent for ``stall_s``, in one step
for ``step_timeout_s``, or not set up within ``start_grace_s``), is restarted with
exponential backoff; the others are never touched. A process may run several stages of
one kind (``capture.cam1+cam2``, see ``pipeline.stage.run_together``): each member
heartbeats and is reported under its own name, and they are restarted together. SIGTERM stops every stage (they
close their files) and exits 0 within ``stop_grace_s``; stragglers are killed. A supervisor
that dies, even by SIGKILL, takes its stages along (``pipeline.worker.end_with``). Under
systemd it reports READY once every stage has set up and reported, and pings WATCHDOG
while it runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import zmq
from zmq.auth.thread import ThreadAuthenticator

from pipeline import systemd
from pipeline.control import ControlService
from pipeline.endpoints import Endpoint
from pipeline.forkserver import ForkedProcess
from pipeline.messages import Heartbeat, MessageError
from pipeline.plan import Plan, StageSpec, SupervisorConfig
from pipeline.publish import PublishProxy
from pipeline.security import secure_server, start_authenticator
from pipeline.stage import member_names

STATE_BROADCAST_S = 1.0  # restarted stages learn the live overrides within this

log = logging.getLogger("vestwatch.supervisor")


@dataclass
class Member:
    """A stage in a process, as its heartbeats tell it."""

    last_heartbeat: float = 0.0
    state: str = "starting"
    stats: dict = field(default_factory=dict)  # none until its setup is done: it is starting
    busy_s: float = 0.0  # how long its current step had run, as of its last heartbeat


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
        """A fresh start: every member starting, nothing reported yet."""
        self.started = time.monotonic()
        for member in self.members.values():
            member.state, member.last_heartbeat, member.stats, member.busy_s = "starting", self.started, {}, 0.0

    @property
    def heard(self) -> bool:
        """Running, and every member has set up and reported since it started."""
        return self.process is not None and all(
            m.stats and m.last_heartbeat > self.started for m in self.members.values()
        )

    def hung(self, config: SupervisorConfig) -> str | None:
        """Why this process is judged hung, or None: a member not set up within ``start_grace_s`` of the
        start, silent for ``stall_s`` (the whole process stopped: its heartbeat thread too), or in one
        step for ``step_timeout_s``. A slow step or a slow start heartbeats all along, and is left be."""
        now = time.monotonic()
        for name, member in self.members.items():
            if not member.stats and now - self.started > config.start_grace_s:
                return f"{name} not started after {now - self.started:.1f} s"
            if member.stats and now - member.last_heartbeat > config.stall_s:
                return f"no heartbeat for {now - member.last_heartbeat:.1f} s"
            if member.busy_s > config.step_timeout_s:
                return f"{name} in one step for {member.busy_s:.1f} s"
        return None


@dataclass
class Sockets:
    """What ``Supervisor.run`` opens, and closes on every way out."""

    context: zmq.Context
    heartbeats: zmq.Socket
    bus: zmq.Socket  # the live overrides, broadcast to every stage
    control: zmq.Socket | None
    authenticator: ThreadAuthenticator | None  # CURVE on the control and publish sockets
    proxy_thread: threading.Thread | None  # forwards to subscribers; closes its own sockets

    def close(self) -> None:
        """Ours first, without lingering, so that ``term()`` returns; it interrupts the proxy thread."""
        if self.authenticator is not None:
            self.authenticator.stop()
        for own in (self.heartbeats, self.bus, self.control):
            if own is not None:
                own.close(0)
        self.context.term()
        if self.proxy_thread is not None:
            self.proxy_thread.join(2)


class Supervisor:
    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config
        self.stages = {spec.name: StageProcess(spec) for spec in config.specs}  # by process name
        self.process_of = self._members()
        self.heartbeat_endpoint = Endpoint("pull", True, f"ipc://{config.runtime_dir}/supervisor.ipc")
        self.bus_endpoint = Endpoint("pub", True, f"ipc://{config.runtime_dir}/bus.ipc")
        self.streams = list(config.streams or [])  # changed by reload
        plan = config.plan() if config.plan else None
        self.fingerprints: dict[str, str] = plan.fingerprints if plan else {}
        self.held: dict[str, str] = plan.held if plan else {}  # what this process read at start
        self.reload_requested = False
        self.control = ControlService(
            config.settable or {}, lambda: self.streams, self.status, self.reload if config.plan else None
        )
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
            "VWSTAGE_CONFIG": str(self.config.config_file) if self.config.config_file else "",
            "VWSTAGE_RUNTIME_DIR": str(self.config.runtime_dir),  # a stage holds it: pipeline.rundir.hold
            "VWSTAGE_SUPERVISOR": str(os.getpid()),  # a stage ends with it, if it is its parent
            "VWSTAGE_STOP_GRACE_S": str(self.config.stop_grace_s),  # an orphan's, too, before it is killed
        }
        env.pop("NOTIFY_SOCKET", None)  # only the supervisor talks to systemd
        if self.config.publish is not None:
            env["VWSTAGE_PUBLISH"] = self.publish_input.peer("xpub").text  # it hears the proxy subscribe
        forkserver = self.config.forkserver
        if forkserver and stage.spec.kind in forkserver.kinds:
            try:
                stage.process = forkserver.spawn(stage.spec.kind, stage.spec.name, env)
            except (OSError, EOFError) as error:  # the fork server died (killed for memory?): it is started again
                stage.started = time.monotonic()
                self._schedule_restart(stage, f"could not be forked ({type(error).__name__}: {error})")
                return
        else:
            stage.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.worker", stage.spec.kind, stage.spec.name],
                env=env,
            )
        stage.begin()
        log.info("started %s (pid %d)", stage.spec.name, stage.process.pid)

    def _schedule_restart(self, stage: StageProcess, why: str) -> None:
        if time.monotonic() - stage.started > 60:
            stage.failures = 0  # it ran well for a while: start the backoff afresh
        first, longest = self.config.backoff_s
        delay = min(longest, first * 2**stage.failures)
        stage.failures += 1
        stage.restarts += 1
        stage.restart_at = time.monotonic() + delay
        stage.process = None
        for member in stage.members.values():
            member.state = "restarting"
        log.warning("%s %s; restarting in %.1f s", stage.spec.name, why, delay)

    @property
    def publish_input(self) -> Endpoint:
        return Endpoint("xsub", True, f"ipc://{self.config.runtime_dir}/publish.ipc")

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
                    "busy_s": member.busy_s,
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
                member.state, member.busy_s = beat.state, beat.busy_s
                member.stats = beat.stats or member.stats  # none while it sets up

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
            elif why := stage.hung(self.config):
                log.warning("%s stalled: %s; killing it", stage.spec.name, why)
                self._stop_processes([stage], grace_s=2.0)
                self._schedule_restart(stage, "stalled")
        if not self.ready and all(stage.heard for stage in self.stages.values()):
            self.ready = True
            systemd.notify("READY=1")
            if self.config.on_ready:
                self.config.on_ready()

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
        """Apply a re-read config: start added stages, stop removed ones, restart changed ones. What the
        daemon itself read at start waits for its restart (named by every reload until then); a change
        to its sockets refuses the reload."""
        try:
            plan = self.config.plan()
            waiting = self._held_changes(plan)
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
        self._stop_processes(removed + changed, grace_s=self.config.stop_grace_s)
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
        restarted, gone = [s.spec.name for s in changed], [s.spec.name for s in removed]
        summary = {"added": added, "removed": gone, "restarted": restarted, "after_restart": waiting}
        log.info("reloaded: %s", summary)
        if waiting:
            log.warning("reload: %s changed; the daemon applies that when it restarts", ", ".join(waiting))
        return summary

    def _held_changes(self, plan: Plan) -> list[str]:
        """The settings the daemon read at start that ``plan`` changes; ValueError for one of its sockets,
        which the restarted stages would look for where the daemon is not."""
        changed = sorted(name for name, value in plan.held.items() if self.held.get(name, value) != value)
        moved = [name for name in changed if name in plan.fixed]
        if moved:
            raise ValueError(f"{', '.join(moved)} changed: the daemon's own sockets move only when it restarts")
        return changed

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
        """Supervise until SIGTERM or SIGINT, then stop every stage: 0."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        self.config.runtime_dir.mkdir(parents=True, exist_ok=True)
        sockets = self._open_sockets()
        try:
            self._supervise(sockets)
            systemd.notify("STOPPING=1")
            log.info("stopping %d stages", len(self.stages))
            self._stop_processes(list(self.stages.values()), self.config.stop_grace_s)
            return 0
        finally:
            sockets.close()

    def _open_sockets(self) -> Sockets:
        """Heartbeats in, the bus out, the publish proxy and the control socket if configured."""
        config = self.config
        context = zmq.Context()
        heartbeats = self.heartbeat_endpoint.open(context, hwm=1000)
        bus = self.bus_endpoint.open(context, hwm=100)
        authenticator = start_authenticator(context) if config.control_keys or config.publish_keys else None
        proxy_thread = None
        if config.publish is not None:
            self.proxy = PublishProxy(
                context,
                self.publish_input,
                config.publish,
                config.publish_hwm,
                self._topics,
                config.publish_keys,
                authenticator,
            )
            proxy_thread = self.proxy.start()
        control = None
        if config.control is not None:
            keys = config.control_keys
            control = config.control.open(
                context,
                hwm=100,
                prepare=(lambda s: secure_server(s, authenticator, keys, "control")) if keys else None,
            )
        return Sockets(context, heartbeats, bus, control, authenticator, proxy_thread)

    def _supervise(self, sockets: Sockets) -> None:
        """Until asked to stop: reload when asked, start and restart stages, take heartbeats,
        answer control, broadcast the live overrides, ping systemd's watchdog."""
        poller = zmq.Poller()
        poller.register(sockets.heartbeats, zmq.POLLIN)
        if sockets.control is not None:
            poller.register(sockets.control, zmq.POLLIN)
        watchdog = systemd.watchdog_interval()
        last_ping = last_broadcast = 0.0
        version = self.control.version
        while not self.stopping:
            if self.reload_requested and self.config.plan is not None:
                self.reload_requested = False
                with contextlib.suppress(ValueError):  # logged by reload()
                    self.reload()
                self._receive_heartbeats(sockets.heartbeats)  # what came in meanwhile, before judging silence
            self._watch()
            ready = dict(poller.poll(200))
            if sockets.heartbeats in ready:
                self._receive_heartbeats(sockets.heartbeats)
            if sockets.control is not None and sockets.control in ready:
                self._answer(sockets.control)
            if version != self.control.version or time.monotonic() - last_broadcast > STATE_BROADCAST_S:
                sockets.bus.send(self.control.state.encode())
                version, last_broadcast = self.control.version, time.monotonic()
            if watchdog and time.monotonic() - last_ping > watchdog:
                systemd.notify("WATCHDOG=1")
                last_ping = time.monotonic()
