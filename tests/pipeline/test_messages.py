import msgpack
import pytest

from pipeline.messages import FrameRef, Heartbeat, MessageError
from stages.stream.messages import DetectionMessage


def test_round_trip_keeps_every_field() -> None:
    ref = FrameRef("cam1", 42, 3, 1700000000.5, 1.25, True, drops=2)
    assert FrameRef.decode(ref.encode()) == ref


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xc1garbage", "not msgpack"),
        (msgpack.packb([1, 2]), "not a msgpack map"),
        (msgpack.packb({"v": 1, "type": "frame"}), "expected frame v3"),
        (msgpack.packb({"v": 3, "type": "frame", "stream": "c"}), "missing field 'seq'"),
        (
            msgpack.packb(
                {
                    "v": 3,
                    "type": "frame",
                    "stream": "c",
                    "seq": "7",
                    "slot": 1,
                    "captured": 1.0,
                    "pts": None,
                    "realtime": True,
                }
            ),
            "field 'seq' has type str",
        ),
        (
            msgpack.packb(
                {
                    "v": 3,
                    "type": "frame",
                    "stream": "c",
                    "seq": True,
                    "slot": 1,
                    "captured": 1.0,
                    "pts": None,
                    "realtime": True,
                }
            ),
            "field 'seq' has type bool",
        ),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(payload: bytes, message: str) -> None:
    with pytest.raises(MessageError, match=message):
        FrameRef.decode(payload)


def test_a_message_of_another_type_is_refused() -> None:
    with pytest.raises(MessageError, match="expected det"):
        DetectionMessage.decode(Heartbeat("capture.x", 1).encode())


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    data = msgpack.unpackb(Heartbeat("inference", 9).encode())
    data["future_field"] = [1, 2]
    assert Heartbeat.decode(msgpack.packb(data)).pid == 9
