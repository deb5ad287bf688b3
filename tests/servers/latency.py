"""A vLLM-like test server with a fixed per-request latency and a concurrency cap.

It speaks vLLM's OpenAI-compatible API (``GET /v1/models``, non-streaming
``POST /v1/chat/completions`` answered with ``tests.servers.vllm.completion()``), takes
``latency`` seconds per answer, and works on at most ``cap`` requests at once: more wait for a
slot, as requests queue in a real server. It records what the Batch tests check: the most
chat requests it saw at once (``max_seen``, waiting ones included) and the most it worked on at
once (``max_processing``, never above ``cap``), and per-location counts and arrival times (the
location is the ``Location:`` line of the PV prompt).

A failure plan answers some locations with an error: ``Fail(503, first=2)`` for their first two
attempts, ``Fail(500)`` for every attempt; ``Fail(0, ...)`` sends nothing for ``hang_s``
seconds (a client read timeout). An unknown model gets vLLM's 404.
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.servers.base import LocalServer
from tests.servers.vllm import NOT_FOUND_NEW, completion

LOCATION_LINE = re.compile(r"^Location: (.+)$", re.MULTILINE)
ERROR_TYPES = {400: "BadRequestError", 429: "TooManyRequests", 500: "InternalServerError",
               502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
HANG = 0  # Fail(HANG): no answer at all for ``hang_s`` seconds


@dataclass(frozen=True)
class Fail:
    """Answer ``status`` (or hang, for ``HANG``) to the first ``first`` attempts, or to every
    attempt when ``first`` is None."""

    status: int = 503
    first: int | None = None


def answer_text(location: str) -> str:
    """The answer for one location: Markdown with a script tag the HTML export must drop."""
    return (f"## Recommendation for {location}\n\nInstall **12 panels** for this household."
            "\n\n<script>alert('pv')</script>\n")


def location_of(body: dict[str, Any]) -> str:
    """The ``Location:`` line of the last user message (the whole prompt's start if none)."""
    messages = body.get("messages") or [{}]
    prompt = str(messages[-1].get("content") or "")
    match = LOCATION_LINE.search(prompt)
    return match.group(1).strip() if match else prompt[:60]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # 30 simultaneous connects must not overflow the listen backlog


class LatencyServer(LocalServer):
    """``with LatencyServer(latency=0.2, cap=5) as server:`` then point a backend at
    ``server.url``."""

    def __init__(self, latency: float = 0.2, cap: int = 64, served: tuple[str, ...] = ("smollm2",),
                 failures: Mapping[str, Fail] | None = None, completion_tokens: int = 200,
                 hang_s: float = 5.0) -> None:
        self.latency, self.cap, self.served = latency, cap, served
        self.failures = dict(failures or {})
        self.completion_tokens, self.hang_s = completion_tokens, hang_s
        self.requests: Counter[str] = Counter()  # chat requests per location, failures too
        self.answered: Counter[str] = Counter()  # 200 answers per location
        self.arrivals: dict[str, list[float]] = {}  # time.monotonic() of each request
        self.statuses: list[tuple[str, int]] = []  # (location, status) in answer order
        self.hangups = 0  # requests whose client hung up before the answer
        self.max_seen = 0  # most chat requests at once, queued ones included
        self.max_processing = 0  # most worked on at once (never above cap)
        self._seen = 0
        self._processing = 0
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(cap)
        super().__init__(_handler(self), server_class=_Server)

    @property
    def in_flight(self) -> int:
        """Chat requests received and not yet answered (or abandoned)."""
        with self._lock:
            return self._seen

    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    # -- bookkeeping used by the handler ----------------------------------------------------
    def _arrive(self, location: str) -> int:
        """Count a request in; returns its attempt number for this location (1-based)."""
        with self._lock:
            self._seen += 1
            self.max_seen = max(self.max_seen, self._seen)
            self.requests[location] += 1
            self.arrivals.setdefault(location, []).append(time.monotonic())
            return self.requests[location]

    def _leave(self) -> None:
        with self._lock:
            self._seen -= 1

    def _hung_up(self) -> None:
        with self._lock:
            self.hangups += 1

    def _work_start(self) -> None:
        with self._lock:
            self._processing += 1
            self.max_processing = max(self.max_processing, self._processing)

    def _work_end(self) -> None:
        with self._lock:
            self._processing -= 1

    def _failure_for(self, location: str, attempt: int) -> int | None:
        fail = self.failures.get(location)
        if fail is None or (fail.first is not None and attempt > fail.first):
            return None
        return fail.status


def _handler(server: LatencyServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: Any, location: str | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            if location is not None:
                with server._lock:
                    server.statuses.append((location, status))

        def _client_gone(self) -> bool:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            try:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

        def _wait(self, seconds: float) -> bool:
            """Sleep like a generating server; False as soon as the client hangs up."""
            deadline = time.monotonic() + seconds
            while (remaining := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([self.connection], [], [], min(remaining, 0.01))
                if readable and self._client_gone():
                    return False
            return True

        def _take_slot(self) -> bool:
            """Queue for one of the ``cap`` slots; False if the client hangs up meanwhile."""
            while not server._slots.acquire(timeout=0.01):
                if self._client_gone():
                    return False
            return True

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._reply(200, {"object": "list", "data": [
                    {"id": name, "object": "model", "owned_by": "vllm", "max_model_len": 8192}
                    for name in server.served]})
            elif self.path == "/health":
                self._reply(200, {})
            else:
                self._reply(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            if self.path != "/v1/chat/completions":
                self._reply(404, {"detail": "Not Found"})
                return
            location = location_of(body)
            attempt = server._arrive(location)
            try:
                self._chat(body, location, attempt)
            finally:
                server._leave()

        def _chat(self, body: dict[str, Any], location: str, attempt: int) -> None:
            model = str(body.get("model"))
            if model not in server.served:
                error = json.loads(json.dumps(NOT_FOUND_NEW).replace("{model}", model))
                self._reply(404, error, location)
                return
            if body.get("stream"):
                self._reply(400, {"error": {"message": "this test server does not stream",
                                            "type": "BadRequestError", "code": 400}}, location)
                return
            status = server._failure_for(location, attempt)
            if status == HANG:
                if not self._wait(server.hang_s):
                    server._hung_up()
                    return
                status = None
            if status is not None:
                self._reply(status, {"error": {
                    "message": f"planned failure {status} for {location} (attempt {attempt})",
                    "type": ERROR_TYPES.get(status, "Error"), "param": None, "code": status}},
                    location)
                return
            if not self._take_slot():
                server._hung_up()
                return
            server._work_start()
            try:
                if not self._wait(server.latency):
                    server._hung_up()
                    return
            finally:
                server._work_end()
                server._slots.release()
            self._reply(200, completion(answer_text(location), model=model,
                                        completion_tokens=server.completion_tokens), location)
            with server._lock:
                server.answered[location] += 1

    return Handler
