"""Heartbeats flow from a stage's own thread through a slow setup and a long step, saying how long
the step has run; the supervisor judges a process hung by silence, a step that never ends or a start
that never finishes, and leaves a slow one be."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import zmq

from pipeline.endpoints import Endpoint
from pipeline.messages import Heartbeat
from pipeline.plan import StageSpec, SupervisorConfig
from pipeline.stage import Stage
from pipeline.supervisor import StageProcess

SLOW_S = 1.5


class Slow(Stage):
    """Sets up for ``SLOW_S``, then takes one step of ``SLOW_S``, then quick ones until stopped."""

    heartbeat_interval_s = 0.1

    def __init__(self, heartbeat: Endpoint) -> None:
        super().__init__("slow.one", heartbeat)
        self.steps = 0
        self.long_step_over = threading.Event()

    def setup(self) -> None:
        time.sleep(SLOW_S)

    def step(self) -> None:
        self.steps += 1
        time.sleep(SLOW_S if self.steps == 1 else 0.01)
        if self.steps == 2:
            self.long_step_over.set()


def test_heartbeats_flow_through_a_slow_setup_and_a_long_step(tmp_path: Path) -> None:
    endpoint = Endpoint("pull", True, f"ipc://{tmp_path}/hb.ipc")
    context = zmq.Context()
    beats_in = endpoint.open(context)
    stage = Slow(endpoint.peer("push"))
    worker = threading.Thread(target=stage.serve)
    worker.start()
    beats: list[Heartbeat] = []
    try:
        deadline = time.monotonic() + 30
        while not stage.long_step_over.is_set() and time.monotonic() < deadline:
            if beats_in.poll(100):
                beats.append(Heartbeat.decode(beats_in.recv()))
        time.sleep(3 * Slow.heartbeat_interval_s)
        while beats_in.poll(0):
            beats.append(Heartbeat.decode(beats_in.recv()))
    finally:
        stage.request_stop()
        worker.join(10)
        context.destroy(linger=0)
    setting_up = [beat for beat in beats if beat.state == "starting"]
    assert len(setting_up) >= 5 and all(beat.stats == {} for beat in setting_up), "beats while it sets up"
    assert max(beat.busy_s for beat in setting_up) >= SLOW_S / 2
    running = [beat for beat in beats if beat.state == "running"]
    in_the_long_step = [beat for beat in running if beat.busy_s >= SLOW_S / 2]
    assert len(in_the_long_step) >= 3, "beats while one step runs long, saying so"
    assert all(beat.stats == {"bad_messages": 0} for beat in running), "the figures made between steps"
    assert running[-1].busy_s < SLOW_S / 2, "the long step is over"


def member_of(stage: StageProcess, **state: object) -> None:
    for key, value in state.items():
        setattr(stage.members["slow.one"], key, value)


def test_the_supervisor_judges_a_stage_hung_by_silence_a_step_or_its_start_not_a_slow_step() -> None:
    config = SupervisorConfig([], Path("/nonexistent"), None, stall_s=15, step_timeout_s=120, start_grace_s=300)
    stage = StageProcess(StageSpec("slow", "slow.one"))
    stage.begin()
    assert stage.hung(config) is None and not stage.heard, "starting: given start_grace_s"
    stage.started -= 301
    assert stage.hung(config) == "slow.one not started after 301.0 s"
    stage.begin()
    now = time.monotonic()
    member_of(stage, stats={"frames": 1}, last_heartbeat=now, busy_s=90.0)
    assert stage.hung(config) is None, "a slow step that heartbeats is no hang"
    member_of(stage, busy_s=121.0)
    assert stage.hung(config) == "slow.one in one step for 121.0 s"
    member_of(stage, busy_s=0.0, last_heartbeat=now - 16)
    assert stage.hung(config).startswith("no heartbeat for 16.")
