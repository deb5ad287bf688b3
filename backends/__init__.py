"""LLM backends: Ollama, vLLM and an embedded llama.cpp model, all behind one interface.

``BACKENDS`` maps each kind to its class, the registry ``create_backend`` builds from; a class
says what it can do (``streams``, ``can_stream_sse``, ``can_pull_models``, ``default_host``...)
before any is built, and how it is built from config.yaml's options (``from_options``).
``studio.runs.connection`` builds the one config.yaml names (``from_config()``).
"""

from __future__ import annotations

from .base import Backend, BackendOptions, delivery, needs_server
from .embedded_backend import DEFAULT_N_CTX, EmbeddedBackend
from .errors import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendStatusError,
    BackendTimeoutError,
    ContextLengthError,
    InvalidHostError,
    ModelNotFoundError,
    StreamError,
    TruncatedStreamError,
)
from .http import CONNECT_TIMEOUT_S, READ_TIMEOUT_S
from .ollama_backend import OllamaBackend
from .openai_sdk import CLIENT_OPENAI
from .sampling import DEFAULT_SAMPLING, Sampling
from .shared import shared as _shared
from .stream import Answer, GenerationStats, TokenStream
from .vllm_backend import VLLMBackend

__all__ = [
    "BACKENDS", "DEFAULT_SAMPLING", "Answer", "AuthenticationError", "Backend",
    "BackendConnectionError", "BackendError", "BackendStatusError", "BackendTimeoutError",
    "ContextLengthError", "EmbeddedBackend",
    "GenerationStats", "InvalidHostError", "ModelNotFoundError", "OllamaBackend",
    "Sampling", "StreamError", "TokenStream", "TruncatedStreamError", "VLLMBackend",
    "backend_class",
    "create_backend", "delivery", "forget_server_facts", "needs_server",
]

BACKENDS: dict[str, type[Backend]] = {
    cls.name: cls for cls in (OllamaBackend, VLLMBackend, EmbeddedBackend)}


def forget_server_facts() -> None:
    """Drop what the backends learnt about servers (model info, windows, token ratios): a
    server restarted on the same address may serve other models."""
    _shared().forget_server_facts()


def backend_class(kind: str) -> type[Backend]:
    """The class of a backend kind (ollama, vllm, embedded), to ask what it can do."""
    try:
        return BACKENDS[kind]
    except KeyError:
        raise ValueError(f"Unknown backend {kind!r}: use {', '.join(BACKENDS)}.") from None


def create_backend(kind: str, *, host: str = "", model: str = "", api_key: str | None = None,
                   connect_timeout: float = CONNECT_TIMEOUT_S,
                   read_timeout: float = READ_TIMEOUT_S,
                   model_dirs: tuple[str, ...] = (), n_ctx: int = DEFAULT_N_CTX,
                   num_ctx: int | None = None, keep_alive: str | int | None = None,
                   vllm_client: str = CLIENT_OPENAI) -> Backend:
    """One backend by kind; empty host or model means that backend's default.
    ``vllm_client``: openai (the SDK where installed, else requests) or requests."""
    cls = backend_class(kind)
    return cls.from_options(BackendOptions(
        host=host or cls.default_host, model=model or cls.default_model, api_key=api_key,
        connect_timeout=connect_timeout, read_timeout=read_timeout, model_dirs=model_dirs,
        n_ctx=n_ctx, num_ctx=num_ctx, keep_alive=keep_alive, vllm_client=vllm_client))
