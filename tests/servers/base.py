"""The life of every test server: a threaded HTTP/1.1 server on 127.0.0.1, started and
stopped around a test (``with Server() as server: server.url``)."""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (for servers started as processes)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """Subclasses build their handler class and pass it to ``__init__``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0,
                 server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer) -> None:
        # TCP_NODELAY on every connection, as the real servers set it (uvicorn under vLLM,
        # Go's net/http under Ollama): a reply's headers and body, written apart, must not wait
        # for the client's delayed ACK on a kept-alive connection (40 ms a request).
        handler.disable_nagle_algorithm = True
        self._httpd = server_class(("127.0.0.1", port), handler)
        self._httpd.daemon_threads = True  # a hung client never blocks the test's end
        # Every connection accepted: counted (a client that keeps its connections opens
        # few), and hung up when the server stops, as a process that exits would.
        self.connections = 0
        self._accepted: list[socket.socket] = []
        self._accepted_lock = threading.Lock()
        accept = self._httpd.get_request

        def counted() -> tuple[socket.socket, Any]:
            sock, address = accept()
            with self._accepted_lock:
                self.connections += 1
                self._accepted.append(sock)
            return sock, address

        self._httpd.get_request = counted  # type: ignore[method-assign]

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        # A short poll interval: shutdown() waits for it, after every test.
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._accepted_lock:
            accepted, self._accepted = self._accepted, []
        for sock in accepted:  # kept-alive connections of clients: hung up
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
