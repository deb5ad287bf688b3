"""Is a backend reachable, which models does it have, and what should the analyst do if not."""

from __future__ import annotations

from dataclasses import dataclass, field

from backends import create_backend
from backends.base import Backend, BackendError
from studio.config import Settings

BACKEND_LABELS = {"ollama": "Ollama", "vllm": "vLLM", "embedded": "Embedded (SmolLM2)"}
PROBE_CONNECT_TIMEOUT = 2.0  # a status light must not hang the page


@dataclass(frozen=True)
class BackendStatus:
    reachable: bool
    models: list[str] = field(default_factory=list)
    message: str = ""
    hint: str = ""


def build(settings: Settings, kind: str, host: str = "", model: str = "",
          connect_timeout: float | None = None) -> Backend:
    """A backend of ``kind`` with the config's settings, host and model overridden."""
    configured = settings.backends[kind]
    return create_backend(
        kind, host=host or configured.host, model=model or configured.model,
        api_key=configured.api_key(),
        connect_timeout=connect_timeout or settings.connect_timeout,
        read_timeout=settings.read_timeout, model_dirs=settings.embedded.model_dirs,
        n_ctx=settings.embedded.n_ctx)


def probe(settings: Settings, kind: str, host: str = "") -> BackendStatus:
    """List the backend's models; a failure becomes the error's message and its fix."""
    try:
        backend = build(settings, kind, host, connect_timeout=PROBE_CONNECT_TIMEOUT)
        models = backend.list_models()
    except BackendError as exc:
        return BackendStatus(False, message=exc.message, hint=exc.hint)
    if not models and kind == "ollama":
        model = settings.backends["ollama"].model
        return BackendStatus(True, [], "Ollama is running but has no models.",
                             f"Pull one: `ollama pull {model}`")
    return BackendStatus(True, models)
