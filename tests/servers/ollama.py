"""A test server that behaves like Ollama on the wire (../shared/reference/wire-protocols.md).

Threaded HTTP/1.1, chunked transfer encoding, one flushed NDJSON line per token, Go-style
escaping, integer-nanosecond durations, and Ollama's error shapes. A ``Script`` says how the
next chat answers: tokens, pace, and the failure to stage (error status, error line
mid-stream, dropped connection, malformed line...). The server records what it was asked and
notices when a client hangs up mid-stream, which is how tests see that Stop really cancels.

Run it by hand for a demo: ``python -m tests.servers.ollama --port 11434 --delay 0.05``.
"""

from __future__ import annotations

import argparse
import json
import re
import select
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.servers.base import LocalServer

SAMPLE_ANSWER = """## RECOMMENDATION FOR PV PANEL INSTALLATION

### KEY TRENDS AND SEASONAL PATTERNS
*   Average daily consumption: 53.76 kWh
*   Peak weekly max load: 7.79 kW

### PAYBACK PERIOD AND ROI
*   Break-even: ~10.03 years (budget-constrained)
"""


def tokenize(text: str) -> list[str]:
    """Split text into word-sized tokens that join back to exactly the text."""
    return re.findall(r"\s*\S+|\s+", text)


@dataclass
class Script:
    """How the server answers a chat request. Counts are in tokens already sent."""

    tokens: list[str] = field(default_factory=lambda: tokenize(SAMPLE_ANSWER))
    delay: float = 0.0  # seconds before each token line after the first
    status: int = 200  # not 200: answer {"error": error} with this status, before any token
    error: str = "model runner has unexpectedly stopped, this may be due to resource " \
                 "limitations or an internal error, check ollama server logs for details"
    error_after: int | None = None  # then a last {"error": ...} line, no done line
    drop_after: int | None = None  # then close the socket without ending the chunked body
    malformed_after: int | None = None  # then a line that is not JSON
    end_without_done: bool = False  # end the body cleanly but never send done:true
    blank_lines: bool = False  # an empty line (and a CRLF one) between token lines
    go_escape: bool = True  # escape < > & U+2028 U+2029 as Go's encoder does
    gate: threading.Event | None = None  # hold the second token line until this is set
    load_duration_ns: int = 41_295_167
    prompt_eval_count: int = 169


class FakeOllama(LocalServer):
    """Start with ``with FakeOllama() as server:``; ``server.url`` is its base URL."""

    def __init__(self, models: Iterable[str] = ("llama3.1:8b", "mistral:7b"),
                 script: Script | None = None, *, not_found: str = "new",
                 port: int = 0) -> None:
        self.models = list(models)
        self.script = script or Script()
        self.not_found = not_found  # "new" (v0.12+) or "old" wording of the 404
        self.chat_requests: list[dict[str, Any]] = []
        self.hangups: list[float] = []  # when a client closed a stream before its end
        self.client_closed = threading.Event()
        self.streams_started = 0
        self._lock = threading.Lock()
        super().__init__(_make_handler(self), port)

    def record_hangup(self) -> None:
        with self._lock:
            self.hangups.append(time.monotonic())
        self.client_closed.set()


def _encode(obj: dict[str, Any], go_escape: bool) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    if go_escape:
        for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                              ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
            text = text.replace(char, escaped)
    return text.encode() + b"\n"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class _ClientGone(Exception):
    pass


def _make_handler(server: FakeOllama) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        # -- plumbing -------------------------------------------------------------------
        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

        def _chunk(self, data: bytes) -> None:
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            except OSError as exc:
                raise _ClientGone from exc

        def _wait(self, seconds: float, gate: threading.Event | None = None) -> None:
            """Sleep, or wait for the gate, while watching for the client hanging up."""
            deadline = time.monotonic() + seconds
            while True:
                remaining = deadline - time.monotonic()
                if gate is None and remaining <= 0:
                    return
                if gate is not None and gate.is_set():
                    return
                timeout = 0.02 if gate is not None else min(remaining, 0.02)
                readable, _, _ = select.select([self.connection], [], [], timeout)
                if readable:
                    try:
                        if self.connection.recv(1, socket.MSG_PEEK) == b"":
                            raise _ClientGone
                    except OSError as exc:
                        raise _ClientGone from exc

        # -- routes ---------------------------------------------------------------------
        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            if self.path == "/":
                self._send(200, b"Ollama is running", "text/plain; charset=utf-8")
            elif self.path == "/api/version":
                self._json(200, {"version": "0.12.3"})
            elif self.path == "/api/tags":
                self._json(200, {"models": [_tag(name) for name in server.models]})
            elif self.path == "/api/ps":
                self._json(200, {"models": []})
            else:
                self._send(404, b"404 page not found", "text/plain")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path != "/api/chat":
                self._send(404, b"404 page not found", "text/plain")
                return
            if not raw:
                self._json(400, {"error": "missing request body"})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._json(400, {"error": "invalid character 'x' looking for beginning of value"})
                return
            server.chat_requests.append(body)
            model = body.get("model")
            if not model:
                self._json(400, {"error": "model is required"})
                return
            if model not in server.models:
                text = (f"model '{model}' not found" if server.not_found == "new"
                        else f'model "{model}" not found, try pulling it first')
                self._json(404, {"error": text})
                return
            script = server.script
            if script.status != 200:
                self._json(script.status, {"error": script.error})
                return
            try:
                self._stream_chat(body, script)
            except _ClientGone:
                server.record_hangup()
            self.close_connection = True

        def _stream_chat(self, body: dict[str, Any], script: Script) -> None:
            started = time.monotonic_ns()
            model = body["model"]
            limit = (body.get("options") or {}).get("num_predict")
            tokens = script.tokens
            done_reason = "stop"
            if isinstance(limit, int) and 0 <= limit < len(tokens):
                tokens, done_reason = tokens[:limit], "length"
            if body.get("stream") is False:
                self._json(200, _final(model, "".join(tokens), done_reason, len(tokens),
                                       started, script))
                return
            server.streams_started += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for index, token in enumerate(tokens):
                if index == script.error_after:
                    self._chunk(_encode({"error": script.error}, script.go_escape))
                    self._chunk(b"")
                    return
                if index == script.drop_after:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if index == script.malformed_after:
                    self._chunk(b'{"model":"' + model.encode() + b'","message":{"con\n')
                if index == 1 and script.gate is not None:
                    self._wait(0, script.gate)
                if index > 0 and script.delay:
                    self._wait(script.delay)
                if script.blank_lines:
                    self._chunk(b"\n\r\n")
                line = {"model": model, "created_at": _now(),
                        "message": {"role": "assistant", "content": token}, "done": False}
                self._chunk(_encode(line, script.go_escape))
            if not script.end_without_done:
                final = _final(model, "", done_reason, len(tokens), started, script)
                self._chunk(_encode(final, script.go_escape))
            self._chunk(b"")  # the terminating zero-length chunk

    return Handler


def _final(model: str, content: str, done_reason: str, eval_count: int, started_ns: int,
           script: Script) -> dict[str, Any]:
    total = time.monotonic_ns() - started_ns + script.load_duration_ns
    eval_ns = max(total - script.load_duration_ns - 24_573_166, 1)
    return {"model": model, "created_at": _now(),
            "message": {"role": "assistant", "content": content}, "done": True,
            "done_reason": done_reason, "total_duration": total,
            "load_duration": script.load_duration_ns,
            "prompt_eval_count": script.prompt_eval_count, "prompt_eval_duration": 24_573_166,
            "eval_count": eval_count, "eval_duration": eval_ns}


def _tag(name: str) -> dict[str, Any]:
    return {"name": name, "model": name, "modified_at": "2025-06-27T13:46:49.045595241-07:00",
            "size": 4920734272, "digest": "a" * 64,
            "details": {"parent_model": "", "format": "gguf", "family": "llama",
                        "families": ["llama"], "parameter_size": "8.0B",
                        "quantization_level": "Q4_K_M"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds between tokens")
    parser.add_argument("--answer-file", help="markdown file to stream as the answer")
    parser.add_argument("--models", default="llama3.1:8b,mistral:7b")
    args = parser.parse_args()
    answer = Path(args.answer_file).read_text() if args.answer_file else SAMPLE_ANSWER
    server = FakeOllama(args.models.split(","), Script(tokens=tokenize(answer), delay=args.delay),
                        port=args.port)
    print(f"Fake Ollama on {server.url} (models: {args.models})", flush=True)
    server.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
