"""vLLM's Path A: chat completions sent with the openai SDK, which the seed prefers.

One SDK client per server (URL, key and timeouts), kept in the backends' ``Shared`` so its
connections are reused, built as ``backends.http`` behaves: no retries, no redirects followed,
no proxy from the environment. Its failures become the same backend errors, in the same words, as
Path B's (``http.request``). A Stop must hang up at once, even while the request still waits
for the answer's first byte (vLLM sends nothing until a one-piece answer is whole): the
client's connections report their socket to the request being sent on this thread
(``hangup_on``), so the request's ``http.Abort`` can shut it, as on Path B.

The SDK is optional (``available``): without it, vLLM's chat completions go through Path B.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from . import http
from .errors import BackendError, BackendStatusError
from .shared import shared

try:  # Path A is optional: the seed falls back to plain HTTP without the SDK.
    import httpcore2
    import httpx2
    import openai
except ImportError:  # exercised by a test that hides the module
    available = False
else:
    available = True

# backends.vllm.client in config.yaml: how vLLM's chat completions are sent.
CLIENT_OPENAI, CLIENT_REQUESTS = "openai", "requests"
CLIENTS = (CLIENT_OPENAI, CLIENT_REQUESTS)

_sending = threading.local()  # .hangup: the Abort of the request this thread is sending


@contextlib.contextmanager
def hangup_on(abort: http.Abort | None) -> Iterator[None]:
    """While inside, the request this thread sends gives its socket to ``abort``."""
    _sending.hangup = abort
    try:
        yield
    finally:
        _sending.hangup = None


def client(base_url: str, api_key: str | None, timeout: http.Timeout) -> Any:
    """The process's SDK client for this server (``openai.OpenAI``), made on first use and
    kept in the backends' ``Shared``."""
    return shared().openai_client((base_url, api_key or "", timeout),
                                  lambda: _new_client(base_url, api_key, timeout))


def _new_client(base_url: str, api_key: str | None, timeout: http.Timeout) -> Any:
    connect, read = timeout
    # max_retries=0: the SDK would otherwise retry a down server twice with backoff, turning
    # one clear failure into a long silent wait. Its HTTP client follows no redirects (the
    # SDK's default follows them) and, as in backends.http, takes no proxy from the
    # environment.
    http_client = httpx2.Client(transport=_transport(), follow_redirects=False,
                                trust_env=False, timeout=httpx2.Timeout(read, connect=connect))
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key or "EMPTY", max_retries=0,
                         timeout=openai.Timeout(read, connect=connect), http_client=http_client)


def map_errors(*, backend: str, host: str, timeout: http.Timeout, unreachable_hint: str,
               status_error: Callable[[int, str], BackendStatusError],
               partial_text: Callable[[], str]) -> contextlib.AbstractContextManager[None]:
    """Inside, the SDK's and its HTTP client's failures become Path B's backend errors:
    before the answer (refused, timed out, an HTTP error status, a redirect) and while it is
    read (a stall, a broken connection: the text so far kept)."""
    return _MappedErrors(backend, host, timeout, unreachable_hint, status_error, partial_text)


class _MappedErrors(contextlib.AbstractContextManager[None]):
    def __init__(self, backend: str, host: str, timeout: http.Timeout, unreachable_hint: str,
                 status_error: Callable[[int, str], BackendStatusError],
                 partial_text: Callable[[], str]) -> None:
        self.backend, self.host, self.timeout = backend, host, timeout
        self.hint, self.status_error, self.partial_text = (unreachable_hint, status_error,
                                                           partial_text)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: object) -> None:
        if exc is None or isinstance(exc, BackendError):
            return
        error = self._translated(exc)
        if error is not None:
            raise error from exc

    def _translated(self, exc: BaseException) -> BackendError | None:
        backend, host = self.backend, self.host
        if isinstance(exc, openai.APITimeoutError):
            if isinstance(exc.__cause__, httpx2.ConnectTimeout):
                return http.connect_timeout_error(backend, host, self.timeout[0], self.hint)
            return http.read_timeout_error(backend, host, self.timeout[1])
        if isinstance(exc, openai.APIConnectionError):
            return http.unreachable_error(backend, host, self.hint)
        if isinstance(exc, openai.APIStatusError):
            if http.is_redirect(exc.status_code):
                return http.redirect_error(exc.status_code, backend=backend, host=host)
            return self.status_error(exc.status_code, _error_text(exc.response))
        if isinstance(exc, httpx2.TimeoutException):  # reading the answer
            return http.stalled_error(backend, host)
        if isinstance(exc, httpx2.TransportError):
            return http.broken_error(backend, host, self.partial_text())
        return None


def _error_text(response: Any) -> str:
    """The server's own error text, read as ``http.error_text`` reads it on Path B."""
    try:
        return http.message_from_body(response.json())
    except ValueError:
        return str(response.text).strip()[:500] or str(response.reason_phrase or "")


# -- connections that say their socket -------------------------------------------------------
if available:
    class _ReportingStream(httpcore2.NetworkStream):
        """A connection that gives its socket to the request this thread is sending."""

        def __init__(self, stream: httpcore2.NetworkStream) -> None:
            self._stream = stream

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            hangup: http.Abort | None = getattr(_sending, "hangup", None)
            sock = self._stream.get_extra_info("socket")
            if hangup is not None and sock is not None:
                hangup.attach(sock)
            self._stream.write(buffer, timeout)

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._stream.read(max_bytes, timeout)

        def close(self) -> None:
            self._stream.close()

        def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                      timeout: float | None = None) -> httpcore2.NetworkStream:
            return _ReportingStream(self._stream.start_tls(ssl_context, server_hostname,
                                                           timeout))

        def get_extra_info(self, info: str) -> Any:
            return self._stream.get_extra_info(info)

    class _ReportingBackend(httpcore2.SyncBackend):
        def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore2.NetworkStream:
            return _ReportingStream(super().connect_tcp(*args, **kwargs))

    def _transport() -> httpx2.HTTPTransport:
        """httpx2's own transport over connections that say their socket."""
        limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
        transport = httpx2.HTTPTransport(trust_env=False, limits=limits)
        # httpx2 takes no network backend; its pool (httpcore2's, public) does.
        transport._pool = httpcore2.ConnectionPool(
            ssl_context=httpx2.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, network_backend=_ReportingBackend())
        return transport
