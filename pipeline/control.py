"""The control channel's logic: validate a request, apply it to the live state, answer.

The supervisor serves it on a REP socket and broadcasts the resulting ``ControlState``
to every stage. Which settings can be changed, and how their values are checked, is
given by the caller (``settable``), so this module knows nothing of detectors.
Every request is validated; a malformed or unknown one gets an error reply and is
counted, and never raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.messages import ControlReply, ControlRequest, ControlState, MessageError

ALL_STREAMS = "*"


class ControlService:
    def __init__(
        self,
        settable: dict[str, Callable[[Any], Any]],
        streams: Callable[[], list[str]],
        status: Callable[[], dict[str, Any]],
        reload: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.settable = settable  # key -> validator returning the value or raising ValueError
        self.streams = streams
        self.status = status
        self.reload = reload  # re-reads the config; raises ValueError with the reason when it cannot
        self.state = ControlState()
        self.bad_requests = 0
        self.version = 0  # bumped on every change, so the caller knows when to broadcast

    def handle(self, frames: list[bytes]) -> bytes:
        """The reply to one request, however malformed; a request is one ZeroMQ frame."""
        try:
            if len(frames) != 1:
                raise MessageError(f"{len(frames)} frames, expected one")
            request = ControlRequest.decode(frames[0])
            result = self._apply(request)
        except (MessageError, ValueError, KeyError, TypeError) as error:
            self.bad_requests += 1
            return ControlReply(
                False, f"{type(error).__name__}: {error}".replace("KeyError: ", "missing argument ")
            ).encode()
        return ControlReply(True, None, result).encode()

    def _stream(self, args: dict[str, Any], required: bool) -> str | None:
        stream = args.get("stream")
        if stream is None and not required:
            return None
        if stream not in self.streams():
            raise ValueError(f"unknown stream {stream!r} (streams: {', '.join(self.streams())})")
        return stream

    def _apply(self, request: ControlRequest) -> dict[str, Any]:
        args = request.args
        if request.command == "status":
            return {
                **self.status(),
                "overrides": self.state.overrides,
                "paused": self.state.paused,
                "bad_requests": self.bad_requests,
            }
        if request.command == "set":
            key = args["key"]
            if key not in self.settable:
                raise ValueError(f"cannot set {key!r} (settable: {', '.join(sorted(self.settable))})")
            value = self.settable[key](args["value"])
            scope = self._stream(args, required=False) or ALL_STREAMS
            self.state.overrides.setdefault(scope, {})[key] = value
            self.version += 1
            return {"set": {scope: {key: value}}}
        if request.command in ("pause", "resume"):
            stream = self._stream(args, required=True)
            paused = set(self.state.paused)
            (paused.add if request.command == "pause" else paused.discard)(stream)
            self.state.paused = sorted(paused)
            self.version += 1
            return {"paused": self.state.paused}
        if request.command == "reload" and self.reload is not None:
            return self.reload()
        raise ValueError(f"unknown command {request.command!r} (status, set, pause, resume, reload)")

    def reset(self, overrides: dict[str, dict[str, Any]]) -> None:
        """After a reload: the config's values replace live overrides; pauses of removed streams go."""
        self.state.overrides = overrides
        self.state.paused = [s for s in self.state.paused if s in self.streams()]
        self.version += 1
