"""The publish proxy: the one public endpoint subscribers read, fed by every stage.

Stages publish into an internal XSUB; subscribers read the public XPUB, and keep their
connection when a publishing stage restarts. Subscriptions stop here (the XSUB takes
everything), so no client can make the stages hold anything.

What a client can make *this* process hold is bounded three ways. Only a prefix of a topic
the daemon publishes is applied; anything else is refused and counted. A peer sending more
than ``MAX_SUBSCRIPTION_BYTES`` at once is disconnected (libzmq keeps about 100 KB for a 2 KB
message an XPUB receives: 20,000 made-up 2 KB subscriptions once took the supervisor to 3 GB).
libzmq's manual XPUB still stores every subscription a peer sends (about 3 KB for a distinct
70-byte one, measured: 100,000 took 335 MB), so the count per peer is not bounded here: with
``keys`` (CURVE) only listed subscribers get in at all, which a network-facing endpoint needs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

from pipeline.endpoints import Endpoint
from pipeline.security import secure_server

MAX_SUBSCRIPTION_BYTES = 80  # "event." + a 64-character stream id, and the flag byte, fit
MAX_HANDSHAKE_BYTES = 512  # with CURVE keys, whose handshake messages are longer


class PublishProxy:
    def __init__(
        self,
        context: zmq.Context,
        internal: Endpoint,
        public: Endpoint,
        hwm: int,
        topics: Callable[[], list[str]],
        keys: Path | None = None,
        authenticator: ThreadAuthenticator | None = None,
    ) -> None:
        """``topics``: what the daemon publishes now (``det.cam1``, ...); subscriptions must be prefixes."""
        self.context, self.public, self.hwm, self.topics = context, public, hwm, topics
        self.keys, self.authenticator = keys, authenticator
        self.inbound = internal.open(context, hwm=hwm)
        self.inbound.send(b"\x01")  # subscribe to everything the stages publish
        self.outbound = self._open_public()
        self.refused = 0  # made-up subscriptions, for status

    def _open_public(self) -> zmq.Socket:
        def bounded(socket: zmq.Socket) -> None:
            socket.setsockopt(zmq.XPUB_MANUAL, 1)
            if self.keys:
                socket.setsockopt(zmq.MAXMSGSIZE, MAX_HANDSHAKE_BYTES)
                secure_server(socket, self.authenticator, self.keys, "publish")
            else:
                socket.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)

        return Endpoint("xpub", True, self.public.address).open(self.context, hwm=self.hwm, prepare=bounded)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._forward, name="publish-proxy", daemon=True)
        thread.start()
        return thread

    def _forward(self) -> None:
        poller = zmq.Poller()
        poller.register(self.inbound, zmq.POLLIN)
        poller.register(self.outbound, zmq.POLLIN)
        try:
            while True:
                for socket, _ in poller.poll():
                    if socket is self.inbound:
                        self.outbound.send_multipart(self.inbound.recv_multipart())
                    else:
                        self._subscription(self.outbound.recv())
        except zmq.ContextTerminated:  # term() at shutdown interrupts it
            pass
        finally:
            self.inbound.close(0)
            self.outbound.close(0)

    def _subscription(self, request: bytes) -> None:
        """Apply a subscriber's (un)subscription if it is a prefix of a topic published here."""
        wanted = request[1:]
        topics = [topic.encode() for topic in self.topics()]
        if request[:1] not in (b"\x00", b"\x01") or not any(t.startswith(wanted) for t in topics):
            self.refused += 1
            return
        self.outbound.setsockopt(zmq.SUBSCRIBE if request[:1] == b"\x01" else zmq.UNSUBSCRIBE, wanted)
