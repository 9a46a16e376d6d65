"""The supervisor's small HTTP server (loopback by default): routes are callables, served from a thread.

>>> server = serve("127.0.0.1:8080", {"/healthz": lambda path: (200, "application/json", b"{}")})
>>> server.shutdown()

A route whose key ends in ``/`` serves every path under it; the route gets the path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

Route = Callable[[str], tuple[int, str, bytes]]  # path -> (status, content type, body)


def serve(address: str, routes: dict[str, Route]) -> ThreadingHTTPServer:
    host, _, port = address.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            route = routes.get(path) or next(
                (
                    r
                    for prefix, r in routes.items()
                    if prefix.endswith("/") and prefix != "/" and path.startswith(prefix)
                ),
                None,
            )
            if route is None:
                status, content_type, body = 404, "text/plain", b"not found\n"
            else:
                try:
                    status, content_type, body = route(path)
                except Exception as error:  # a broken page must not take the server down
                    log.exception("HTTP %s failed", self.path)
                    status, content_type, body = 500, "text/plain", f"{type(error).__name__}\n".encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug(format, *args)

    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
