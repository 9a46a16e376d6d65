"""CPU and resident memory of the daemon's processes, and the GPU's use, sampled during a run."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024


def machine_busy() -> tuple[float, float]:
    """Busy and total CPU time of the whole machine so far, in clock ticks (from /proc/stat)."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return sum(ticks) - idle, sum(ticks)


def pss_mib(pid: int) -> float:
    """Proportional set size: pages shared by several processes (libraries, code forked from one
    parent, the frame rings) counted by their share, so that the sum over processes is the memory
    really used. The kernel sums it (smaps_rollup): about 9 ms of CPU for a process that maps torch."""
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")) / 1024


def ring_pss_mib(pid: int, rings: str) -> float:
    """The part of the PSS that is frame rings (files under ``rings``, the runtime dir): a walk of
    every mapping in Python, about 30 ms of CPU a process, so done once, after a run."""
    ring = 0
    mapping = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0] and line[0] in "0123456789abcdef":
            mapping = line.split()[-1] if len(line.split()) >= 6 else ""
        elif line.startswith("Pss:") and mapping.startswith(rings):
            ring += int(line.split()[1])
    return ring / 1024


@dataclass
class Usage:
    """One process over the measured window."""

    cpu_percent: float  # of one core
    rss_mib: float  # the highest sample
    pss_mib: float  # the highest sample
    ring_pss_mib: float  # of it, frame rings (shared memory between the stages)


@dataclass
class Sampler:
    """Samples from ``start()`` to ``stop()``: each named process's resident memory and, where
    ``nvidia-smi`` is present, the GPU's utilisation and memory every ``every_s``; PSS every
    ``pss_every_s`` (64 cameras are some 200 processes: sampling must not be what loads the machine);
    the rings' share of it once, at ``stop()``."""

    pids: dict[str, int]
    rings: str  # the runtime dir: mappings under it are frame rings
    every_s: float = 0.5
    pss_every_s: float = 5.0
    rss: dict[str, float] = field(default_factory=dict)
    pss: dict[str, float] = field(default_factory=dict)
    ring_pss: dict[str, float] = field(default_factory=dict)
    gpu_util: list[float] = field(default_factory=list)
    gpu_mib: list[float] = field(default_factory=list)
    machine_cpu_percent: float = 0.0  # of all cores: 100 is every core busy

    def start(self) -> None:
        self.began = time.monotonic()
        self.cpu_before = {name: _cpu(pid) for name, pid in self.pids.items()}
        self.machine_before = machine_busy()
        self.running = threading.Event()
        self.running.set()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def stop(self) -> dict[str, Usage]:
        self.running.clear()
        self.thread.join()
        elapsed = time.monotonic() - self.began
        busy, total = (now - then for now, then in zip(machine_busy(), self.machine_before, strict=True))
        self.machine_cpu_percent = round(100 * busy / max(total, 1), 1)
        used = {name: _cpu(pid) - self.cpu_before[name] for name, pid in self.pids.items()}  # before the slow part
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):  # gone: no figure
                self.ring_pss[name] = ring_pss_mib(pid, self.rings)
        usage = {}
        for name in self.pids:
            memory = (round(figures.get(name, 0.0), 1) for figures in (self.rss, self.pss, self.ring_pss))
            usage[name] = Usage(round(100 * used[name] / elapsed, 1), *memory)
        return usage

    def _sample(self) -> None:
        smi = shutil.which("nvidia-smi")
        pss_due = 0.0
        while self.running.is_set():
            sample_pss = time.monotonic() >= pss_due
            if sample_pss:
                pss_due = time.monotonic() + self.pss_every_s
            for name, pid in self.pids.items():
                with contextlib.suppress(OSError, StopIteration, ValueError):  # restarted or gone: figure stays
                    self.rss[name] = max(self.rss.get(name, 0.0), rss_mib(pid))
                    if sample_pss:
                        self.pss[name] = max(self.pss.get(name, 0.0), pss_mib(pid))
            if smi:
                with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):  # "[N/A]" under MIG
                    self._sample_gpu(smi)
            time.sleep(self.every_s)

    def _sample_gpu(self, smi: str) -> None:
        query = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "--id=0"]
        reply = subprocess.run([smi, *query], capture_output=True, text=True, timeout=10).stdout
        util, mib = (float(value) for value in reply.split(",")[:2])
        self.gpu_util.append(util)
        self.gpu_mib.append(mib)


def _cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0
