"""The stage base class: a process that sets up, steps until stopped, and heartbeats.

A stage implements ``step()`` (one bounded unit of work: wait at most a fraction of a
second) and optionally ``setup()``/``teardown()``; the base owns the signal handling,
the heartbeat socket and the clean shutdown, so that the supervisor never has to kill
what it can stop.

Heartbeats go out from a thread of the stage's own, every second, also while the work is in a
long step (a CPU batch on an overloaded server) or in its setup (loading a model): each says how
long the current step has run (``busy_s``), and the supervisor judges a stage hung by that, or by
silence (the whole process stopped), not by the length of one step. The figures they carry are
made by the working thread between steps (``beat``), so the thread never reads half-changed ones.

Several stages of one kind may share a process (``run_together``), a thread each: a camera
then costs its own work's memory, not an interpreter's. Such a process is named after its
members, ``capture.cam1+cam2``; each member heartbeats under its own name.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import zmq

from pipeline.endpoints import Endpoint
from pipeline.messages import ControlState, Heartbeat, Message, MessageError, WireMessage, decode_one_of

log = logging.getLogger(__name__)
LIBC = ctypes.CDLL(None)  # glibc: malloc_trim
PUBLISH_JOIN_S = 10.0  # how long a publisher waits for the publish proxy to take what it sends


def give_back_freed_memory() -> None:
    """Frames of MiBs are allocated and freed all the time; glibc keeps what is freed inside its heaps
    (its mmap threshold rises after the first large free), tens of MiB per stage. Trimming once a
    heartbeat returns it to the system at a cost of microseconds, and keeps malloc fast meanwhile."""
    with contextlib.suppress(OSError, AttributeError):
        LIBC.malloc_trim(0)


@dataclass
class StageStats:
    """What every stage reports; each kind adds its own figures in a subclass."""

    bad_messages: int = 0  # malformed messages dropped


class Stage(ABC):
    heartbeat_interval_s = 1.0

    def __init__(self, name: str, heartbeat: Endpoint | None) -> None:
        self.name = name
        self.context = zmq.Context()
        self.stopping = False
        self.state = "starting"
        self.stats: StageStats = StageStats()
        self._heartbeat_endpoint = heartbeat
        self.trims_memory = os.environ.get("VWSTAGE_TRIM") == "1"  # set by pipeline.forkserver
        self._heartbeat: zmq.Socket | None = None
        self._bus: zmq.Socket | None = None
        self._last_beat = 0.0
        self._busy_since = time.monotonic()  # when the working thread last finished a step or a wait
        self._report: dict[str, Any] = {}  # the latest figures, made by the working thread
        self._wake = threading.Event()  # send a heartbeat now (a new state), not at the next second
        self._pulse: threading.Thread | None = None

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Open sockets, files and devices."""

    @abstractmethod
    def step(self) -> None:
        """One unit of work; must return within about a second so heartbeats keep flowing."""

    def teardown(self) -> None:  # noqa: B027 - optional hook
        """Close what ``setup`` opened; runs on every exit path."""

    def drain(
        self, socket: zmq.Socket, message_type: type[Message] | tuple[type[WireMessage], ...], topics: bool = False
    ) -> Iterator[Message]:
        """Every message waiting on ``socket``, decoded; garbage is logged, counted in
        ``stats.bad_messages`` and skipped. ``topics``: two-frame (topic, payload) messages. A tuple of
        types: a socket that carries several, each message decoded as the one its type names."""
        kinds = message_type if isinstance(message_type, tuple) else (message_type,)
        while True:
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                if topics and len(frames) != 2:
                    raise MessageError(f"{len(frames)} frames, expected topic and payload")
                yield decode_one_of(frames[-1] if topics else b"".join(frames), kinds)
            except MessageError as error:
                self.reject("/".join(kind.TYPE for kind in kinds), error)

    def reject(self, kind: str, error: Exception) -> None:
        """A malformed message: logged, counted in ``stats.bad_messages``, never acted on."""
        self.stats.bad_messages += 1
        log.warning("dropped a malformed %s message (%s)", kind, error)

    def open_publisher(self) -> zmq.Socket:
        """A socket into the supervisor's publish proxy, from which subscribers read. What a publisher
        sends before the proxy's subscription reaches it is dropped (a moment after it connects; longer on
        a loaded box): a restarted stage's first messages, the ``end`` of the events its crash left open,
        were lost so. The supervisor gives an XPUB, which hears that subscription: this returns once it has
        come, or after ``PUBLISH_JOIN_S``, said."""
        socket = Endpoint.parse(os.environ["VWSTAGE_PUBLISH"]).open(self.context, hwm=1000)
        if socket.type == zmq.XPUB:
            if socket.poll(int(PUBLISH_JOIN_S * 1000)):
                socket.recv()  # the proxy's "everything"
            else:
                log.warning("%s: the publish proxy has not subscribed in %.0f s: what goes out until it does is "
                            "lost", self.name, PUBLISH_JOIN_S)  # fmt: skip
        return socket

    def report(self) -> dict[str, Any]:
        """What the heartbeat carries: ``stats``; a stage sets figures computed at send time first."""
        return asdict(self.stats)

    def on_control(self, state: ControlState) -> None:  # noqa: B027 - optional hook
        """Apply the live overrides (thresholds, paused streams); called when they arrive."""

    def _poll_bus(self) -> None:
        if self._bus is not None:
            for state in self.drain(self._bus, ControlState):
                self.on_control(state)

    def request_stop(self, *_: object) -> None:
        self.stopping = True

    def beat(self, force: bool = False) -> None:
        """The working thread is alive between two pieces of work: the step it was in is over, and
        (once a second, or now when ``force``) the figures the heartbeats carry are made afresh."""
        now = self._busy_since = time.monotonic()
        if self._heartbeat is None or (not force and now - self._last_beat < self.heartbeat_interval_s):
            return
        self._last_beat = now
        if self.trims_memory:
            give_back_freed_memory()
        self._report = self.report()
        if force:
            self._wake.set()

    def _send_heartbeats(self, socket: zmq.Socket) -> None:
        """The heartbeat thread: the latest figures every ``heartbeat_interval_s`` until the stage stops,
        with how long the working thread has been in its current step."""
        while self.state != "stopped":
            self._wake.wait(self.heartbeat_interval_s)
            self._wake.clear()
            busy_s = round(time.monotonic() - self._busy_since, 1)
            message = Heartbeat(self.name, os.getpid(), self.state, self._report, busy_s)
            with contextlib.suppress(zmq.Again):  # the supervisor is busy or gone; it notices by itself
                socket.send(message.encode(), zmq.NOBLOCK)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        return self.serve()

    def serve(self) -> int:
        """Set up, step until stopped, tear down; the caller handles signals."""
        if self._heartbeat_endpoint is not None:
            self._heartbeat = self._heartbeat_endpoint.open(self.context, hwm=10)
            self._pulse = threading.Thread(
                target=self._send_heartbeats, args=(self._heartbeat,), name=f"{self.name} heartbeat", daemon=True
            )
            self._pulse.start()
        bus = os.environ.get("VWSTAGE_BUS")
        self._bus = Endpoint.parse(bus).open(self.context, hwm=10) if bus else None
        if self._bus is not None:
            self._bus.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            self._busy_since = time.monotonic()
            self.setup()
            self.state = "running" if self.state == "starting" else self.state
            self.beat(force=True)
            while not self.stopping:
                self.step()
                self.beat()
                self._poll_bus()
            return 0
        finally:
            self.state = "stopping"
            try:
                self.teardown()
            finally:
                self.state = "stopped"
                self._wake.set()
                if self._pulse is not None:
                    self._pulse.join(2 * self.heartbeat_interval_s)
                self.context.destroy(linger=0)


def member_names(name: str) -> list[str]:
    """The stages a process named ``name`` runs: ``capture.cam1+cam2`` -> capture.cam1, capture.cam2."""
    kind, _, instances = name.partition(".")
    return [f"{kind}.{instance}" for instance in instances.split("+")] if "+" in instances else [name]


def process_name(members: list[str]) -> str:
    """The name of a process that runs ``members`` (stages of one kind): ``member_names``' inverse."""
    kind = members[0].split(".", 1)[0]
    return members[0] if len(members) == 1 else f"{kind}." + "+".join(m.split(".", 1)[1] for m in members)


def run_together(stages: list[Stage]) -> int:
    """Stages in one process, a thread each, stopped together by SIGTERM. One that fails stops the
    others, and the process exits 1: its supervisor restarts them all, as it would a single stage."""
    failed = threading.Event()

    def stop(*_: object) -> None:
        for stage in stages:
            stage.request_stop()

    def serve(stage: Stage) -> None:
        try:
            stage.serve()
        except BaseException:
            log.exception("%s failed; stopping the stages it shares a process with", stage.name)
            failed.set()
            stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threads = [threading.Thread(target=serve, args=(stage,), name=stage.name) for stage in stages]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # joined in slices, so that the main thread still takes signals
            thread.join(0.5)
    return 1 if failed.is_set() else 0
