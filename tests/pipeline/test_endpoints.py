import pytest
import zmq

from pipeline.endpoints import Endpoint, EndpointError


def test_parse_and_peer() -> None:
    endpoint = Endpoint.parse("pub+bind:tcp://0.0.0.0:5560")
    assert (endpoint.kind, endpoint.bind, endpoint.address) == ("pub", True, "tcp://0.0.0.0:5560")
    assert endpoint.peer("sub").text == "sub+connect:tcp://127.0.0.1:5560"
    assert Endpoint.parse("sub+connect:ipc:///run/vestwatch/det.ipc").peer("pub").text == (
        "pub+bind:ipc:///run/vestwatch/det.ipc"
    )


@pytest.mark.parametrize("text", ["pub:tcp://x:1", "pubb+bind:tcp://x:1", "pub+listen:tcp://x:1", "pub+bind:udp://x"])
def test_malformed_endpoints_name_the_expected_form(text: str) -> None:
    with pytest.raises(EndpointError, match="expected TYPE\\+bind\\|connect"):
        Endpoint.parse(text)


def test_a_real_pair_talks(tmp_path) -> None:
    context = zmq.Context()
    try:
        pull = Endpoint.parse(f"pull+bind:ipc://{tmp_path}/x.ipc").open(context)
        push = Endpoint.parse(f"pull+bind:ipc://{tmp_path}/x.ipc").peer("push").open(context)
        push.send(b"hello")
        assert pull.poll(5000) and pull.recv() == b"hello"
    finally:
        context.destroy(0)
