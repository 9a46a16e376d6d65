"""GStreamer's RTSP server playing one H.264 MP4 as COUNT cameras, for ``vestwatch bench``.

Run by Debian's python3, which has ``gi`` (a venv cannot import it):

    /usr/bin/python3 stages/capacity/rtsp_server.py PORT FILE COUNT

Serves ``rtsp://127.0.0.1:PORT/cam0`` .. ``camCOUNT-1``; each client gets its own playback from
the start, paced in real time, the H.264 passed through (no encoding here). Prints ``READY``.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    mounts = server.get_mount_points()
    for camera in range(count):
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(
            f'( filesrc location="{path}" ! qtdemux ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )'
        )
        mounts.add_factory(f"/cam{camera}", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {port}")
    print("READY", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
