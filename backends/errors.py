"""The error types every backend raises.

The hierarchy lets a caller catch precisely (like openai-python's): a connection problem,
a missing model, or anything else the server said. Every error carries a ``hint``, the one line
an analyst needs in order to act ("run `ollama serve`", "ollama pull llama3.1:8b").
"""

from __future__ import annotations

from typing import Any


class BackendError(Exception):
    """Base of every error a backend raises. ``hint`` says what the user can do about it."""

    def __init__(self, message: str, *, hint: str = "", backend: str = "", host: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.backend = backend
        self.host = host

    def __str__(self) -> str:
        message = self.message.strip()
        if message and self.hint and message[-1] not in ".!?":
            message += "."  # a server's message often ends bare: the hint is a sentence
        return f"{message} {self.hint}".strip()


class BackendConnectionError(BackendError, ConnectionError):
    """The host could not be reached (refused, DNS, connect timeout)."""


class InvalidHostError(BackendError, ValueError):
    """The host URL is malformed (no scheme, a path, a bad port): no request was sent."""


class BackendTimeoutError(BackendConnectionError):
    """The host was reached but sent nothing within the read timeout."""


class BackendStatusError(BackendError, RuntimeError):
    """The server answered with an error. ``server_message`` is the server's own text; the
    message always carries it too, so whatever shows the error shows the server's words."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        server_message: str = "",
        partial_text: str = "",
        **kwargs: Any,
    ) -> None:
        if server_message and server_message not in message:
            message = f"{message} The server said: {server_message}"
        super().__init__(message, **kwargs)
        self.status_code = status_code
        self.server_message = server_message
        # Text generated before the error (mid-stream failures): never thrown away.
        self.partial_text = partial_text


class ModelNotFoundError(BackendStatusError):
    """The server does not have the requested model (HTTP 404)."""

    def __init__(self, message: str, *, model: str, available: list[str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(message, status_code=404, **kwargs)
        self.model = model
        self.available = available or []


class ContextLengthError(BackendStatusError):
    """The server refused a prompt and answer that do not fit the model's window (HTTP 400:
    Ollama 0.30+ without context shift, vLLM always)."""


class AuthenticationError(BackendStatusError):
    """The server wants an API key that was missing or wrong (HTTP 401)."""


class StreamError(BackendStatusError):
    """The server reported an error, or the stream broke, after text had started to arrive."""


class TruncatedStreamError(StreamError):
    """The stream ended before the server said it was done: the answer is incomplete."""
