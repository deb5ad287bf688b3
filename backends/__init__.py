"""LLM backends: Ollama, vLLM and an embedded llama.cpp model, all behind one interface.

``from_config()`` builds the backend that config.yaml's ``llm:`` block names, so switching
backends is a config change only::

    backend = from_config()            # reads config.yaml
    print(backend.generate("How many panels?", system="You are ..."))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import (
    Answer,
    AuthenticationError,
    Backend,
    BackendConnectionError,
    BackendError,
    BackendStatusError,
    BackendTimeoutError,
    GenerationStats,
    ModelNotFoundError,
    StreamError,
    TokenStream,
    TruncatedStreamError,
)
from .embedded_backend import EmbeddedBackend
from .ollama_backend import OllamaBackend
from .vllm_backend import VLLMBackend

__all__ = [
    "Answer", "AuthenticationError", "Backend", "BackendConnectionError", "BackendError",
    "BackendStatusError", "BackendTimeoutError", "EmbeddedBackend", "GenerationStats",
    "ModelNotFoundError", "OllamaBackend", "StreamError", "TokenStream",
    "TruncatedStreamError", "VLLMBackend", "create_backend", "from_config",
]


def create_backend(kind: str, *, host: str = "", model: str = "", api_key: str | None = None,
                   connect_timeout: float = 5.0, read_timeout: float = 600.0,
                   model_dirs: tuple[str, ...] = (), n_ctx: int = 4096) -> Backend:
    """One backend by kind; empty host or model means that backend's default."""
    if kind == "ollama":
        return OllamaBackend(host or "http://localhost:11434", model or "llama3",
                             connect_timeout=connect_timeout, read_timeout=read_timeout)
    if kind == "vllm":
        return VLLMBackend(host or "http://localhost:8000",
                           model or "meta-llama/Meta-Llama-3-8B-Instruct", api_key,
                           connect_timeout=connect_timeout, read_timeout=read_timeout)
    if kind == "embedded":
        return EmbeddedBackend(model or None, model_dirs=model_dirs, n_ctx=n_ctx)
    raise ValueError(f"Unknown backend {kind!r}: use ollama, vllm or embedded.")


def from_config(config: str | Path | dict[str, Any] | None = None,
                kind: str | None = None) -> Backend:
    """The backend config.yaml selects (``llm.backend``), or ``kind`` with its settings.

    ``config`` is a path, an already-parsed mapping, or None for config.yaml.
    """
    from studio.config import load_config, parse_config  # the config schema lives there

    settings = parse_config(config) if isinstance(config, dict) else load_config(config)
    chosen = settings.backends[kind or settings.backend]
    return create_backend(
        chosen.kind, host=chosen.host, model=chosen.model, api_key=chosen.api_key(),
        connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
        model_dirs=settings.embedded.model_dirs, n_ctx=settings.embedded.n_ctx)
