"""The one place where HTTP calls are made and transport failures become backend errors.

It also keeps hold of each request's socket as soon as it connects, so that a Stop can shut
it from another thread even while the request still waits for the first byte (Ollama sends
no headers until the prompt has been evaluated, which can take many seconds on a CPU).
"""

from __future__ import annotations

import contextlib
import http.client
import http.cookiejar
import json
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import parse_url

from .errors import (
    BackendConnectionError,
    BackendStatusError,
    BackendTimeoutError,
    InvalidHostError,
    TruncatedStreamError,
)
from .shared import shared

Timeout = tuple[float, float]  # (connect, read) seconds
# config.yaml's llm.connect_timeout and llm.read_timeout when it sets none; defined here, once,
# for every backend and the config. A down server fails fast; a CPU host's answer takes
# ~144 s (the seed's figures) and a long one more: the read timeout is generous.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 600.0


def redact(url: str) -> str:
    """The URL without any ``user:password@`` part: what may be shown, logged or stored."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.rpartition("@")[2]
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


_USERINFO = re.compile(r"(?<=//)[^\s/?#@'\"<>]*@")


def scrub(text: str, *urls: str) -> str:
    """``text`` (an exception's message, say) with the credentials taken out: every
    ``user:password@`` of a URL in it, and the password of each of ``urls`` wherever it
    still appears (percent-encoded or decoded)."""
    for url in urls:
        userinfo = url.partition("://")[2].split("/", 1)[0].rpartition("@")[0]
        password = userinfo.partition(":")[2]
        for secret in sorted({password, unquote(password)}, key=len, reverse=True):
            if len(secret) >= 3:  # shorter would mangle the text, and guards little
                text = text.replace(secret, "***")
    return _USERINFO.sub("", text)


def check_host(url: str, example: str = "http://localhost:11434") -> str:
    """A server's base URL as typed, checked before any request: scheme, host name, port, and
    nothing after them. Returns it without a trailing slash; raises ``InvalidHostError`` (a
    ``ValueError``) with the fix (``example`` shows the right form). Credentials
    (``user:pw@``) are allowed."""
    url = url.strip()
    shown = redact(url)

    def invalid(problem: str) -> InvalidHostError:
        return InvalidHostError(f"{shown!r} {problem}" if shown else problem)

    if not url:
        raise invalid(f"The host is empty. Type the server's address, e.g. {example}.")
    if "\\" in url or any(char.isspace() or not char.isprintable() for char in url):
        # requests (urllib3) ends the host at a backslash, other parsers do not: the host
        # checked would not be the host contacted. Not quoted: its redacted form would hide it.
        raise InvalidHostError(f"The host has a backslash, a space or a control character, "
                               f"which clients read in different ways: type the server's "
                               f"address without it, as in {example}.")
    if "://" not in url:
        raise invalid(f"has no scheme. Add http:// (or https://): http://{shown.rstrip('/')}.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise invalid(f"has a bad port: a number from 1 to 65535, as in {example}.") from None
    if parts.scheme not in ("http", "https"):
        raise invalid(f"has the wrong scheme: use http:// or https://, as in {example}.")
    if not parts.hostname:
        raise invalid(f"has no host name. Type it after the scheme, as in {example}.")
    if port == 0:
        raise invalid(f"has port 0: use the server's port, as in {example}.")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        base = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], "", "", ""))
        raise invalid(f"has a path; the host is only scheme, name and port: {base}.")
    return url.rstrip("/")


@dataclass(frozen=True)
class Address:
    """Where a checked host's requests go, as requests (urllib3) reads the URL."""

    scheme: str
    host: str
    port: int
    credentials: str | None  # "user:password", None when the URL has none


def address(url: str) -> Address:
    """``url`` checked (``check_host``), then parsed as urllib3 parses it for requests: the
    scheme, host and port it connects to (the scheme's port when none is given) and the
    credentials it sends."""
    parsed = parse_url(check_host(url))
    scheme = parsed.scheme or "http"
    return Address(scheme, (parsed.host or "").lower(),
                   parsed.port or (443 if scheme == "https" else 80), parsed.auth)


# Connections kept open per server: as many as a Batch runs at once (its highest concurrency,
# studio.runs.batch.MAX_CONCURRENCY); more may be open at once, and are closed after use.
POOL_SIZE = 64
SERVERS_KEPT = 16  # servers whose idle connections are kept (the least recently used go)

# The Abort of the request this thread is sending (None: it has none).
_sending = threading.local()


class _Connection(Protocol):
    """A request's connection as Abort holds it: its socket (None once closed)."""

    @property
    def sock(self) -> socket.socket | None: ...


@dataclass(frozen=True)
class _Socket:
    """A socket another client's connection gave (``Abort.attach``)."""

    sock: socket.socket | None


class Abort:
    """Shuts the socket of one request, from any thread, at any point of its life.

    The connection comes from a pool and goes back to it once its answer has been read: from
    then on it may carry another request, so the Abort lets go of it (``_release``) and a
    later call shuts nothing. Until then the socket is this request's alone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: _Connection | None = None
        self._aborted = False

    def _attach(self, connection: _Connection) -> None:
        with self._lock:
            self._connection = connection
            if self._aborted:
                _shutdown(connection.sock)

    def _release(self, connection: _Connection) -> None:
        with self._lock:
            if self._connection is connection:
                self._connection = None

    def attach(self, sock: socket.socket) -> None:
        """The socket of this request sent by another client (the openai SDK's, on vLLM's
        Path A), which keeps its own pool: shut at once if already aborted."""
        self._attach(_Socket(sock))

    def release(self) -> None:
        """This request's answer is in: its connection may carry another request from now
        on, so a later call shuts nothing (requests' pool says so itself, on its return)."""
        with self._lock:
            self._connection = None

    def __call__(self) -> None:
        with self._lock:  # held while shutting: the connection cannot go back to the pool
            self._aborted = True
            if self._connection is not None:
                _shutdown(self._connection.sock)


def _shutdown(sock: socket.socket | None) -> None:
    # shutdown (not close) wakes a thread blocked in recv() and sends FIN to the server.
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _claim(connection: urllib3.connection.HTTPConnection) -> None:
    """The request this thread sends now owns ``connection`` (a new one or one reused)."""
    owner: Abort | None = getattr(_sending, "abort", None)
    previous: Abort | None = getattr(connection, "owner", None)
    if previous is not None and previous is not owner:
        previous._release(connection)
    connection.owner = owner  # type: ignore[attr-defined]
    if owner is not None:
        owner._attach(connection)


def _disown(connection: urllib3.connection.HTTPConnection | None) -> None:
    """``connection`` goes back to the pool: no request's Abort may shut it any more."""
    owner: Abort | None = getattr(connection, "owner", None)
    if connection is not None and owner is not None:
        connection.owner = None  # type: ignore[attr-defined]
        owner._release(connection)


class _TrackedHTTPConnection(urllib3.connection.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _claim(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:  # reused from the pool (a new one claims on connect)
            _claim(self)
        super().request(*args, **kwargs)


class _TrackedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _claim(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:
            _claim(self)
        super().request(*args, **kwargs)


class _TrackedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection

    def _put_conn(self, conn: Any) -> None:
        _disown(conn)
        super()._put_conn(conn)


class _TrackedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection

    def _put_conn(self, conn: Any) -> None:
        _disown(conn)
        super()._put_conn(conn)


class _TrackedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _TrackedHTTPPool,
            "https": _TrackedHTTPSPool,
        }


def _new_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # local servers: a corporate HTTP(S)_PROXY must not intercept
    # Shared by every user of the app: a cookie one server set must not go out with the
    # next request (each request stands alone, as when each had its own session).
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = _TrackedAdapter(pool_connections=SERVERS_KEPT, pool_maxsize=POOL_SIZE,
                              max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session




def request(
    method: str,
    url: str,
    *,
    timeout: Timeout,
    unreachable_hint: str,
    backend: str,
    host: str,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    stream: bool = False,
    abort: Abort | None = None,
) -> requests.Response:
    """Send one request on a pooled connection; transport failures become
    ``BackendConnectionError`` naming the host. A streamed response's connection goes back to
    the pool once its body is read to the end; closed before, it is closed."""
    _sending.abort = abort
    try:
        # No redirects: an LLM server never needs one, and following it would let a server
        # send us to a host nobody chose (on a shared app: into the internal network).
        # One session for the process (kept in backends.shared): a pool of keep-alive
        # connections per server, shared by every backend object and thread (probes, runs,
        # batch rows), so a request reuses an idle one.
        session = shared().session(_new_session)
        response = session.request(method, url, json=json_body, headers=headers,
                                   stream=stream, timeout=timeout, allow_redirects=False)
    except requests.exceptions.ConnectTimeout as exc:
        raise connect_timeout_error(backend, host, timeout[0], unreachable_hint) from exc
    except requests.exceptions.ReadTimeout as exc:
        raise read_timeout_error(backend, host, timeout[1]) from exc
    except requests.exceptions.ConnectionError as exc:
        raise unreachable_error(backend, host, unreachable_hint) from exc
    except requests.exceptions.RequestException as exc:
        detail = scrub(str(exc), url)  # an exception may quote the whole URL
        raise BackendConnectionError(f"Request to {backend} at {host} failed: {detail}",
                                     hint=unreachable_hint, backend=backend, host=host) from exc
    finally:
        _sending.abort = None
    if is_redirect(response.status_code):
        response.close()
        raise redirect_error(response.status_code, backend=backend, host=host)
    return response


def is_redirect(status: int) -> bool:
    return 300 <= status < 400


def redirect_error(status: int, *, backend: str, host: str) -> BackendStatusError:
    """A server answered with a redirect: never followed (by requests or the openai SDK)."""
    return BackendStatusError(
        f"{backend} at {host} answered with a redirect (HTTP {status}), and the app follows "
        f"no redirects: a server could send its requests to a host nobody chose.",
        hint="Set the host to the server's own address (scheme, name and port).",
        status_code=status, backend=backend, host=host)


def error_text(response: requests.Response) -> str:
    """The server's own error text from any of the shapes Ollama and vLLM use."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason or ""
    return message_from_body(body)


def json_value(response: requests.Response, key: str) -> Any:
    """``key`` of a 200 answer's JSON object (a server's ``/version``, say); None otherwise."""
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get(key) if isinstance(body, dict) else None


def message_from_body(body: Any) -> str:
    """``{"error": "..."}`` (Ollama), ``{"error": {"message": ...}}`` (vLLM, OpenAI) or the
    older flat ``{"message": ...}`` (vLLM before 0.10.1)."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error)
        if error:
            return str(error)
        if body.get("message"):
            return str(body["message"])
        if body.get("detail"):
            return str(body["detail"])
    return json.dumps(body)[:500]


def iter_lines(response: requests.Response, *, backend: str, host: str,
               partial_text: Callable[[], str]) -> Iterator[bytes]:
    """Yield each non-empty line of a streamed body (NDJSON, SSE) as soon as it arrives.

    Splits raw bytes on ``\\n`` only: ``str.splitlines`` would also break at U+2028, U+2029
    and U+0085, which can occur inside JSON strings. Reads whatever the socket has (``read1``)
    so a line is never held back waiting for more bytes.
    """
    raw = response.raw
    try:
        yield from split_lines(iter(lambda: raw.read1(65536), b""))
    except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
        raise stalled_error(backend, host) from exc
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError) as exc:
        raise broken_error(backend, host, partial_text()) from exc


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Each non-empty line of a body read as ``chunks`` arrive, yielded as soon as it is
    whole (split on ``\\n`` only; see ``iter_lines``); any client's chunks."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        if b"\n" not in chunk:
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if line.strip():
                yield line
    if pending.strip():
        yield pending.rstrip(b"\r")


# The words of a transport failure, the same whichever client met it (requests, or the
# openai SDK's httpx on vLLM's Path A).
def connect_timeout_error(backend: str, host: str, seconds: float,
                          hint: str) -> BackendConnectionError:
    return BackendConnectionError(
        f"{backend} at {host} did not accept a connection within {seconds:g} s.", hint=hint,
        backend=backend, host=host)


def read_timeout_error(backend: str, host: str, seconds: float) -> BackendTimeoutError:
    return BackendTimeoutError(
        f"{backend} at {host} sent nothing for {seconds:g} s.",
        hint="The server may still be loading the model; raise the read timeout in "
             "config.yaml (llm.read_timeout) for slow CPU hosts.",
        backend=backend, host=host)


def unreachable_error(backend: str, host: str, hint: str) -> BackendConnectionError:
    return BackendConnectionError(f"Cannot reach {backend} at {host}.", hint=hint,
                                  backend=backend, host=host)


def stalled_error(backend: str, host: str) -> BackendTimeoutError:
    """The server went silent in the middle of a streamed answer."""
    return BackendTimeoutError(
        f"{backend} at {host} stopped sending in the middle of the answer.",
        hint="Raise llm.read_timeout in config.yaml for slow hosts.", backend=backend,
        host=host)


def broken_error(backend: str, host: str, partial_text: str) -> TruncatedStreamError:
    """The connection broke in the middle of a streamed answer."""
    return TruncatedStreamError(
        f"The connection to {backend} at {host} broke in the middle of the answer.",
        hint="The text received so far is kept. Check the server's log.",
        backend=backend, host=host, partial_text=partial_text)
