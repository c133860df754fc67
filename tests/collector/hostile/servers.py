"""Hostile HTTP servers for the tests: one that dribbles its answer a byte at a time for ever, one that answers
with a body far larger than any cosignature or timestamp token. Real sockets on loopback port 0."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from contextlib import contextmanager

__all__ = ["hostile_server"]


def _handler(mode: str, content_type: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.end_headers()
            try:
                if mode == "dribble":  # a byte every 0.1 s: each read is quick, the answer never ends
                    while not self.server.closing:  # type: ignore[attr-defined]
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.1)
                else:  # 64 MiB, quickly
                    chunk = b"y" * (1 << 20)
                    for _ in range(64):
                        self.wfile.write(chunk)
            except OSError:
                pass  # the client hung up: what the test wants

        def log_message(self, *_: object) -> None:
            pass

    return Handler


@contextmanager
def hostile_server(mode: str, content_type: str = "text/plain") -> Iterator[str]:
    """A server on loopback answering every POST in ``mode`` ("dribble" or "huge"); yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(mode, content_type))
    server.closing = False  # type: ignore[attr-defined]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.closing = True  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()
