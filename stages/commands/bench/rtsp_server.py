"""GStreamer's RTSP server: cameras for ``vestwatch bench`` and for the tests.

Run by Debian's python3, which has ``gi`` (a venv cannot import it):

    /usr/bin/python3 stages/commands/bench/rtsp_server.py PORT SOURCE MOUNT [MOUNT ...]

SOURCE is an H.264 MP4, played to each client from the start in real time and passed through
(no encoding here), or ``pattern:WIDTHxHEIGHT@FPS``, a live test pattern encoded once and shared
by every client. Serves ``rtsp://127.0.0.1:PORT/MOUNT`` for each mount; prints ``READY``.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def launch(source: str) -> tuple[str, bool]:
    """The pipeline for SOURCE, and whether its clients share one."""
    if source.startswith("pattern:"):
        size, fps = source.removeprefix("pattern:").split("@")
        width, height = size.split("x")
        return (
            f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1 "
            f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! rtph264pay name=pay0 pt=96 )",
            True,
        )
    return (
        f'( filesrc location="{source}" ! qtdemux ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )',
        False,
    )


def main() -> None:
    port, source, mounts = sys.argv[1], sys.argv[2], sys.argv[3:]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    pipeline, shared = launch(source)
    for mount in mounts:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(pipeline)
        factory.set_shared(shared)
        server.get_mount_points().add_factory(mount, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {port}")
    print("READY", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
