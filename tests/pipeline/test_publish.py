"""The publish proxy against real subscribers over TCP: what a client can make it hold."""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from pipeline import publish
from pipeline.endpoints import Endpoint
from pipeline.publish import PublishProxy
from pipeline.stage import Stage


@pytest.fixture
def proxy(tmp_path):
    context = zmq.Context()
    proxy = PublishProxy(
        context,
        Endpoint("xsub", True, f"ipc://{tmp_path}/publish.ipc"),
        Endpoint("xpub", True, "tcp://127.0.0.1:*"),
        hwm=100,
        topics=lambda: ["det.cam", "event.cam"],
    )
    proxy.start()
    stage = context.socket(zmq.PUB)
    stage.connect(f"ipc://{tmp_path}/publish.ipc")
    stop = threading.Event()
    opened.clear()

    def publish_forever() -> None:
        while not stop.is_set():
            stage.send_multipart([b"det.cam", b"payload"])
            stop.wait(0.01)

    publisher = threading.Thread(target=publish_forever)
    publisher.start()
    yield proxy, proxy.outbound.getsockopt_string(zmq.LAST_ENDPOINT), context
    stop.set()
    publisher.join()
    stage.close(0)
    for socket in opened:
        socket.close(0)
    context.term()  # interrupts the proxy, which closes its own sockets


opened: list[zmq.Socket] = []  # the tests' sockets, closed before the context ends


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def flood(context: zmq.Context, endpoint: str, count: int, tag: str) -> zmq.Socket:
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SNDHWM, 0)
    socket.connect(endpoint)
    opened.append(socket)
    for i in range(count):
        socket.setsockopt(zmq.SUBSCRIBE, f"det.{tag}.{i:06d}".encode())
    return socket


def honest_subscriber(context: zmq.Context, endpoint: str) -> zmq.Socket:
    """A subscriber that does not reconnect: if the proxy hung up on it, its messages stop."""
    honest = context.socket(zmq.SUB)
    opened.append(honest)
    honest.setsockopt(zmq.RECONNECT_IVL, -1)
    honest.connect(endpoint)
    honest.setsockopt(zmq.SUBSCRIBE, b"det.cam")
    assert honest.poll(10_000), "no message before the flood"
    return honest


def still_served(honest: zmq.Socket) -> bool:
    while honest.poll(0):  # what was queued before
        honest.recv_multipart()
    return bool(honest.poll(5_000)) and honest.recv_multipart()[0] == b"det.cam"


def test_a_connection_sending_too_many_subscriptions_is_hung_up_on(proxy) -> None:
    proxy, endpoint, context = proxy
    honest = honest_subscriber(context, endpoint)
    flood(context, endpoint, publish.MAX_SUBSCRIPTIONS_PER_PEER * 4, "a")
    wait_for(lambda: proxy.hung_up >= 1)
    assert still_served(honest), "the honest subscriber was hung up on"


def test_unsubscribing_gives_the_share_back(proxy) -> None:
    proxy, endpoint, context = proxy
    switcher = context.socket(zmq.SUB)
    opened.append(switcher)
    switcher.setsockopt(zmq.RECONNECT_IVL, -1)
    switcher.connect(endpoint)
    for _ in range(publish.MAX_SUBSCRIPTIONS_PER_PEER + 10):  # a dashboard switching cameras all day (< SNDHWM)
        switcher.setsockopt(zmq.SUBSCRIBE, b"det.cam")
        switcher.setsockopt(zmq.UNSUBSCRIBE, b"det.cam")
    switcher.setsockopt(zmq.SUBSCRIBE, b"det.cam")
    served = still_served(switcher)
    assert served and proxy.hung_up == 0, (served, proxy.hung_up, proxy.sent_by, proxy.refused)


def test_the_heaviest_sender_goes_when_all_together_hold_too_many(proxy, monkeypatch) -> None:
    monkeypatch.setattr(publish, "MAX_SUBSCRIPTIONS", 1000)
    proxy, endpoint, context = proxy
    honest = honest_subscriber(context, endpoint)
    for peer in range(6):  # each under its own limit, together over the total
        flood(context, endpoint, 200, str(peer))
    wait_for(lambda: proxy.hung_up >= 1)
    assert proxy.total == proxy.sent_by.total() <= 1000 + publish.MAX_SUBSCRIPTIONS_PER_PEER
    assert still_served(honest), "the honest subscriber was hung up on"


class Publisher(Stage):
    """A stage that only publishes."""

    def step(self) -> None:
        raise AssertionError("never stepped")


def test_a_stage_s_first_message_reaches_the_subscribers(tmp_path, monkeypatch) -> None:
    """A restarted stage publishes at once what its crash left open; a PUB, connected a moment before,
    dropped it while the proxy's subscription was on its way."""
    context = zmq.Context()
    internal = Endpoint("xsub", True, f"ipc://{tmp_path}/publish.ipc")
    public = Endpoint("xpub", True, f"ipc://{tmp_path}/public.ipc")
    PublishProxy(context, internal, public, 100, lambda: ["event.cam"]).start()
    subscriber = public.peer("sub").open(context)
    subscriber.setsockopt(zmq.SUBSCRIBE, b"event.cam")
    warm = internal.peer("pub").open(context)  # until it gets through, the subscriber has not joined
    wait_for(lambda: warm.send_multipart([b"event.cam", b"warm"]) or subscriber.poll(50))
    warm.close()
    while subscriber.poll(200):
        subscriber.recv_multipart()
    monkeypatch.setenv("VWSTAGE_PUBLISH", internal.peer("xpub").text)  # as the supervisor says
    got, restarts = [], 20
    try:
        for start in range(restarts):
            stage = Publisher("stream.cam", None)
            publisher = stage.open_publisher()
            publisher.send_multipart([b"event.cam", str(start).encode()])
            publisher.close(linger=1000)
            stage.context.term()
            if subscriber.poll(5000):
                got.append(int(subscriber.recv_multipart()[1]))
    finally:
        subscriber.close()
        context.term()
    assert got == list(range(restarts))
