"""The publish proxy: the one public endpoint subscribers read, fed by every stage.

Stages publish into an internal XSUB; subscribers read the public XPUB, and keep their
connection when a publishing stage restarts. Subscriptions stop here (the XSUB takes
everything), so no client can make the stages hold anything.

What a client can make *this* process hold is bounded three ways. Only a prefix of a topic
the daemon publishes is applied; anything else is refused and counted. A peer sending more
than ``MAX_SUBSCRIPTION_BYTES`` at once is disconnected (libzmq keeps about 100 KB for a 2 KB
message an XPUB receives: 20,000 made-up 2 KB subscriptions once took the supervisor to 3 GB).
libzmq's manual XPUB also stores every subscription a peer sends until that peer's connection
ends (about 3 KB for a distinct 70-byte one: 100,000 took 335 MB), so a connection that sends
more than ``MAX_SUBSCRIPTIONS_PER_PEER`` is hung up on, which frees them, and so is the
heaviest sender while all connections together hold more than ``MAX_SUBSCRIPTIONS``; a real
subscriber sends a few and reconnects by itself. Connections are known by their file
descriptor, from the socket's monitor and from each message (``SRCFD``). With ``keys`` (CURVE)
only listed subscribers get in at all.
"""

from __future__ import annotations

import logging
import os
import socket as sockets
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from pipeline.endpoints import Endpoint
from pipeline.security import secure_server

log = logging.getLogger(__name__)

MAX_SUBSCRIPTION_BYTES = 80  # "event." + a 64-character stream id, and the flag byte, fit
MAX_HANDSHAKE_BYTES = 512  # with CURVE keys, whose handshake messages are longer
MAX_SUBSCRIPTIONS_PER_PEER = 256  # a subscriber needs a few: det./event. and its streams
SUBSCRIPTION_QUEUE = 16  # subscriptions read ahead from one connection
MAX_SUBSCRIPTIONS = 16_384  # all connections together: about 50 MB at worst


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
        self.monitor = self.outbound.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self.refused = 0  # made-up subscriptions, for status
        self.hung_up = 0  # connections cut for sending too many subscriptions, for status
        self.sent_by = Counter[int]()  # subscriptions libzmq holds per connection (its file descriptor)
        self.total = 0  # over all connections

    def _open_public(self) -> zmq.Socket:
        def bounded(socket: zmq.Socket) -> None:
            socket.setsockopt(zmq.XPUB_MANUAL, 1)
            # libzmq stores whatever a connection's queue holds each time this thread touches
            # the socket, so a short queue keeps a flood from outrunning the per-peer count.
            socket.setsockopt(zmq.RCVHWM, SUBSCRIPTION_QUEUE)
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
        poller.register(self.monitor, zmq.POLLIN)
        try:
            while True:
                for socket, _ in poller.poll():
                    if socket is self.inbound:
                        self.outbound.send_multipart(self.inbound.recv_multipart())
                    elif socket is self.outbound:
                        self._subscription(self.outbound.recv(copy=False))
                    else:
                        self._connection(recv_monitor_message(self.monitor))
        except zmq.ContextTerminated:  # term() at shutdown interrupts it
            pass
        finally:
            for socket in (self.inbound, self.monitor, self.outbound):
                socket.close(0)

    def _connection(self, event: dict) -> None:
        """A connection's count starts when it is accepted and goes when it ends."""
        self.total -= self.sent_by.pop(event["value"], 0)

    def _subscription(self, message: zmq.Frame) -> None:
        """Apply a subscriber's (un)subscription if it is a prefix of a topic published here."""
        request = message.bytes
        self._count_sender(message, subscribe=request[:1] != b"\x00")
        wanted = request[1:]
        topics = [topic.encode() for topic in self.topics()]
        if request[:1] not in (b"\x00", b"\x01") or not any(t.startswith(wanted) for t in topics):
            self.refused += 1
            return
        self.outbound.setsockopt(zmq.SUBSCRIBE if request[:1] == b"\x01" else zmq.UNSUBSCRIBE, wanted)

    def _count_sender(self, message: zmq.Frame, subscribe: bool) -> None:
        """Hang up on a connection past its share of subscriptions; libzmq then frees them all."""
        try:
            descriptor = message.get(zmq.SRCFD)
        except zmq.ZMQError:  # libzmq's own unsubscriptions for a connection that ended
            return
        change = 1 if subscribe else -min(1, self.sent_by[descriptor])  # what libzmq holds for it
        self.sent_by[descriptor] += change
        self.total += change
        if self.sent_by[descriptor] > MAX_SUBSCRIPTIONS_PER_PEER:  # again if the hang-up failed
            self._hang_up(descriptor)
        elif self.total > MAX_SUBSCRIPTIONS:
            self._hang_up(self.sent_by.most_common(1)[0][0])

    def _hang_up(self, descriptor: int) -> None:
        held = self.sent_by.pop(descriptor, 0)
        self.total -= held
        if hang_up(descriptor, self.outbound.getsockopt_string(zmq.LAST_ENDPOINT)):
            self.hung_up += 1
            log.warning("publish: hung up on a subscriber holding %d subscriptions (it may reconnect)", held)


def hang_up(descriptor: int, endpoint: str) -> bool:
    """Shut down the connection on ``descriptor`` if it is still one accepted on ``endpoint``.

    The descriptor belongs to libzmq's I/O thread and may have been closed and reused since
    the message was read, so it is checked to be a connection to our own address first."""
    try:
        duplicate = os.dup(descriptor)
    except OSError:  # closed meanwhile
        return False
    try:
        connection = sockets.socket(fileno=duplicate)
    except OSError:  # reused for something that is not a socket
        os.close(duplicate)
        return False
    with connection:
        try:
            if connection.getsockopt(sockets.SOL_SOCKET, sockets.SO_ACCEPTCONN):
                return False  # a listening socket, never a peer
            local = connection.getsockname()
            ours = endpoint.split("://", 1)[1]
            unix = connection.family == sockets.AF_UNIX
            mine = local == ours if unix else str(local[1]) == ours.rsplit(":", 1)[1]
            if mine:
                connection.shutdown(sockets.SHUT_RDWR)
            return mine
        except OSError:  # no longer connected
            return False
