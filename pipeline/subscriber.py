"""A client for integrators: iterate over what the daemon publishes.

>>> for topic, message in subscribe("tcp://site-server:5560", ["det.cam1"]):
...     print(topic, message["counts"], message["latency_ms"])

Messages are dicts; the published topics are documented in ``stages/stream/messages.py``; malformed ones are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import msgpack
import zmq

from pipeline.endpoints import Endpoint
from pipeline.security import secure_client


def subscribe(
    endpoint: str, topics: Sequence[str] = ("det.",), timeout_s: float | None = None, keys: Path | None = None
) -> Iterator[tuple[str, dict]]:
    """Yield (topic, message) for every message whose topic starts with one of ``topics``.

    ``endpoint`` is a plain address (``tcp://host:5560``) or an endpoint string; ends
    after ``timeout_s`` without a message, if given. ``keys``: the folder with the CURVE
    client certificate and ``server.key``, for a daemon with ``publish_keys``.
    """
    target = Endpoint.parse(endpoint) if "+" in endpoint.split("://")[0] else Endpoint("sub", False, endpoint)
    if target.kind == "pub":
        target = target.peer("sub")
    context = zmq.Context.instance()
    socket = target.open(context, hwm=10000, prepare=(lambda s: secure_client(s, keys)) if keys else None)
    for prefix in topics:
        socket.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    try:
        while True:
            if not socket.poll(None if timeout_s is None else int(timeout_s * 1000)):
                return
            frames = socket.recv_multipart()
            if len(frames) != 2:
                continue
            try:
                message = msgpack.unpackb(frames[1], raw=False)
            except Exception:  # msgpack raises several unrelated types on garbage
                continue
            if isinstance(message, dict):
                yield frames[0].decode(errors="replace"), message
    finally:
        socket.close()
