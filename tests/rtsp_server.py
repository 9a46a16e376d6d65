"""A real RTSP server for the tests: GStreamer's rtsp-server serving a live H.264 test pattern.

Run by Debian's python3, which has ``gi`` (a venv cannot import it):

    /usr/bin/python3 tests/rtsp_server.py PORT /cam WIDTHxHEIGHT FPS

Prints ``READY`` once it listens on 127.0.0.1:PORT.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port, mount, size, fps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    width, height = size.split("x")
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! rtph264pay name=pay0 pt=96 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory(mount, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {port}")
    print("READY", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
