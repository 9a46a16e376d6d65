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


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024


@dataclass
class Usage:
    """One process over the measured window."""

    cpu_percent: float  # of one core
    rss_mib: float  # the highest sample


@dataclass
class Sampler:
    """Samples every ``every_s`` from ``start()`` to ``stop()``: memory of each named process and,
    where ``nvidia-smi`` is present, the GPU's utilisation and memory."""

    pids: dict[str, int]
    every_s: float = 0.5
    rss: dict[str, float] = field(default_factory=dict)
    gpu_util: list[float] = field(default_factory=list)
    gpu_mib: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.began = time.monotonic()
        self.cpu_before = {name: _cpu(pid) for name, pid in self.pids.items()}
        self.running = threading.Event()
        self.running.set()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def stop(self) -> dict[str, Usage]:
        self.running.clear()
        self.thread.join()
        elapsed = time.monotonic() - self.began
        usage = {}
        for name, pid in self.pids.items():
            used = _cpu(pid) - self.cpu_before[name]
            usage[name] = Usage(round(100 * used / elapsed, 1), round(self.rss.get(name, 0.0), 1))
        return usage

    def _sample(self) -> None:
        smi = shutil.which("nvidia-smi")
        while self.running.is_set():
            for name, pid in self.pids.items():
                with contextlib.suppress(OSError, StopIteration):  # restarted or gone: its figure stays
                    self.rss[name] = max(self.rss.get(name, 0.0), rss_mib(pid))
            if smi:
                query = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "--id=0"]
                reply = subprocess.run([smi, *query], capture_output=True, text=True, timeout=10).stdout
                if reply.strip():
                    util, mib = reply.split(",")[:2]
                    self.gpu_util.append(float(util))
                    self.gpu_mib.append(float(mib))
            time.sleep(self.every_s)


def _cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0
