from pipeline.control import ControlService
from pipeline.messages import ControlReply, ControlRequest


def service() -> ControlService:
    def unit(value: object) -> float:
        number = float(value)
        if not 0 <= number <= 1:
            raise ValueError(f"{value} is outside [0, 1]")
        return number

    return ControlService({"conf": unit}, lambda: ["cam1", "cam2"], lambda: {"uptime_s": 1.0})


def ask(control: ControlService, command: str, **args: object) -> ControlReply:
    return ControlReply.decode(control.handle([ControlRequest(command, dict(args)).encode()]))


def test_set_pause_resume_change_the_state_and_its_version() -> None:
    control = service()
    assert ask(control, "set", key="conf", value="0.4").ok
    assert ask(control, "set", key="conf", value=0.6, stream="cam2").ok
    assert ask(control, "pause", stream="cam1").result == {"paused": ["cam1"]}
    assert control.state.overrides == {"*": {"conf": 0.4}, "cam2": {"conf": 0.6}}
    assert control.version == 3
    assert ask(control, "resume", stream="cam1").result == {"paused": []}
    status = ask(control, "status").result
    assert status["uptime_s"] == 1.0 and status["bad_requests"] == 0


def test_invalid_requests_are_answered_and_counted_never_applied() -> None:
    control = service()
    answers = [
        ask(control, "set", key="conf", value="1.5"),
        ask(control, "set", key="iou", value="0.5"),
        ask(control, "set", value="0.5"),
        ask(control, "pause", stream="cam9"),
        ask(control, "reboot"),
        ControlReply.decode(control.handle([b"\xff\x00"])),
        ControlReply.decode(control.handle([b"two", b"frames"])),
    ]
    assert [a.ok for a in answers] == [False] * 7
    assert "outside [0, 1]" in answers[0].error and "missing argument 'key'" in answers[2].error
    assert "2 frames, expected one" in answers[6].error
    assert control.bad_requests == 7 and control.version == 0 and control.state.overrides == {}
