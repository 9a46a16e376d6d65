"""ZeroMQ endpoints written as one string, in the form Savant made familiar.

>>> Endpoint.parse("pub+bind:tcp://0.0.0.0:5560")
Endpoint(kind='pub', bind=True, address='tcp://0.0.0.0:5560')
>>> Endpoint.parse("pub+bind:tcp://0.0.0.0:5560").peer("sub").text
'sub+connect:tcp://127.0.0.1:5560'

Moving a stage to another host is then a config change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import zmq

SOCKET_TYPES = {
    "pub": zmq.PUB,
    "sub": zmq.SUB,
    "push": zmq.PUSH,
    "pull": zmq.PULL,
    "rep": zmq.REP,
    "req": zmq.REQ,
    "router": zmq.ROUTER,
    "dealer": zmq.DEALER,
    "xpub": zmq.XPUB,
    "xsub": zmq.XSUB,
}
PATTERN = re.compile(r"^(?P<kind>[a-z]+)\+(?P<mode>bind|connect):(?P<address>(tcp|ipc|inproc)://.+)$")


class EndpointError(ValueError):
    """An endpoint string that is not ``type+bind|connect:transport://address``."""


@dataclass(frozen=True)
class Endpoint:
    kind: str
    bind: bool
    address: str

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        match = PATTERN.match(text.strip())
        if not match or match["kind"] not in SOCKET_TYPES:
            raise EndpointError(
                f"endpoint {text!r}: expected TYPE+bind|connect:tcp://HOST:PORT or ipc://PATH "
                f"with TYPE one of {', '.join(SOCKET_TYPES)}"
            )
        return cls(match["kind"], match["mode"] == "bind", match["address"])

    @property
    def text(self) -> str:
        return f"{self.kind}+{'bind' if self.bind else 'connect'}:{self.address}"

    def peer(self, kind: str) -> Endpoint:
        """The endpoint the other side uses: the opposite mode, wildcard hosts made loopback."""
        address = re.sub(r"//(0\.0\.0\.0|\*):", "//127.0.0.1:", self.address)
        return Endpoint(kind, not self.bind, address)

    def open(
        self,
        context: zmq.Context,
        hwm: int = 100,
        linger_ms: int = 0,
        prepare: Callable[[zmq.Socket], object] | None = None,
    ) -> zmq.Socket:
        """A socket of this type, bound or connected, with bounded queues both ways.

        ``prepare`` sets what must precede bind/connect, such as CURVE keys.
        """
        socket = context.socket(SOCKET_TYPES[self.kind])
        socket.setsockopt(zmq.SNDHWM, hwm)
        socket.setsockopt(zmq.RCVHWM, hwm)
        socket.setsockopt(zmq.LINGER, linger_ms)
        if prepare is not None:
            prepare(socket)
        if self.bind:
            socket.bind(self.address)
        else:
            socket.connect(self.address)
        return socket
