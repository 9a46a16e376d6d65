"""CUDA graphs for the fused model: a recorded forward pass per batch size and input shape, replayed.

At small batches a YOLOv7-tiny forward pass is a few hundred kernel launches whose CPU cost is
larger than the GPU's work; a recorded graph launches them all at once. A graph's shapes are fixed,
so a batch is padded up to the next size in ``BUCKETS`` and the padding's outputs are dropped. A
shape is recorded the second time it is seen (a one-off picture size is not worth the recording),
at most ``MAX_GRAPHS`` of them, all sharing one memory pool. Should recording fail, the model runs
as before, eagerly, and says so once.

On the CPU the same buffers and padding run eagerly (``EagerReplay``): the tests' twin of the GPU path.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MAX_GRAPHS = 16
WARMUP_RUNS = 3  # before recording, on a side stream: cuDNN picks its algorithms, allocations settle

Model = Callable[[torch.Tensor], torch.Tensor]
Key = tuple[int, tuple[int, ...], torch.dtype]


def bucket(batch: int) -> int | None:
    """The recorded batch size a batch of ``batch`` is padded to; None beyond the largest."""
    return next((size for size in BUCKETS if size >= batch), None)


@dataclass
class Recorded:
    """A forward pass that reads ``static_in`` and writes ``static_out`` each ``replay()``."""

    replay: Callable[[], None]
    static_in: torch.Tensor
    static_out: torch.Tensor


class EagerReplay:
    """What a graph does, run eagerly: the CPU's stand-in, with the same static buffers."""

    def __init__(self, model: Model, static_in: torch.Tensor) -> None:
        self.model, self.static_in = model, static_in
        self.static_out = model(static_in)

    def replay(self) -> None:
        self.static_out.copy_(self.model(self.static_in))


class GraphedModel:
    """``model`` (a tensor in, a tensor out, batch first) replayed from graphs on CUDA."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.recorded: dict[Key, Recorded] = {}
        self.seen: Counter[Key] = Counter()
        self.failed = False
        self.pool: tuple[int, int] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        size = bucket(len(x))
        if size is None or self.failed:
            return self.model(x)
        key = (size, tuple(x.shape[1:]), x.dtype)
        recorded = self.recorded.get(key)
        if recorded is None:
            self.seen[key] += 1
            if self.seen[key] < 2 or len(self.recorded) >= MAX_GRAPHS:
                return self.model(x)
            recorded = self._record(size, x)
            if recorded is None:
                return self.model(x)
            self.recorded[key] = recorded
        recorded.static_in[: len(x)].copy_(x)
        recorded.replay()
        return recorded.static_out[: len(x)].clone()  # the next replay overwrites static_out

    def _record(self, size: int, x: torch.Tensor) -> Recorded | None:
        static_in = x.new_zeros((size, *x.shape[1:]))
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            static_in = static_in.contiguous(memory_format=torch.channels_last)
        if x.device.type != "cuda":
            eager = EagerReplay(self.model, static_in)
            return Recorded(eager.replay, static_in, eager.static_out)
        try:
            side = torch.cuda.Stream(x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS):
                    self.model(static_in)
            torch.cuda.current_stream(x.device).wait_stream(side)
            self.pool = self.pool or torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            # the outer context puts the current stream back even if a failed capture_end() leaves
            # torch.cuda.graph's own capture stream current
            with torch.cuda.stream(torch.cuda.current_stream(x.device)), torch.cuda.graph(graph, pool=self.pool):
                static_out = self.model(static_in)
        except RuntimeError as error:
            self.failed = True
            log.warning("CUDA graphs off, the model runs eagerly: %s", (str(error).splitlines() or [""])[0][:200])
            return None
        log.info("recorded a CUDA graph for batches of %d, input %s", size, tuple(x.shape[1:]))
        return Recorded(graph.replay, static_in, static_out)
