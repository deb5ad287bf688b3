"""From config.yaml to a backend: build it, and tell whether it is reachable, which models it
has, and what the analyst should do if not."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends import backend_class, create_backend, forget_server_facts, needs_server
from backends.base import Backend, ModelState
from backends.errors import BackendError, InvalidHostError
from backends.http import address, redact
from studio.settings.config import Settings, load_config, parse_config

PROBE_CONNECT_TIMEOUT = 2.0  # a status light must not hang the page
# How long a probe's answer is reused. Short for a failure: a server started a moment ago must
# not read "not reachable" (and switch new sessions to the embedded model) for long.
REACHABLE_TTL_S = 20.0
UNREACHABLE_TTL_S = 2.0
STATE_TTL_S = 5.0  # loaded or not changes with every run: asked again after a few seconds

@dataclass(frozen=True)
class BackendStatus:
    reachable: bool
    models: list[str] = field(default_factory=list)
    message: str = ""
    hint: str = ""
    bad_host: bool = False  # the host as typed is malformed: nothing was sent


def build(settings: Settings, kind: str, host: str = "", model: str = "",
          connect_timeout: float | None = None) -> Backend:
    """A backend of ``kind`` with the config's settings, host and model overridden. Where
    hosts are fixed by config (a shared server), any other host is refused before anything
    is sent to it."""
    configured = settings.backends[kind]
    if host and settings.allow_custom_hosts is False and needs_server(backend_class(kind)):
        host = allowed_host(host, configured.allowed_hosts, backend_class(kind).label)
    return create_backend(
        kind, host=host or configured.host, model=model or configured.model,
        api_key=configured.api_key(),
        connect_timeout=connect_timeout or settings.connect_timeout,
        read_timeout=settings.read_timeout, model_dirs=settings.embedded.model_dirs,
        n_ctx=settings.embedded.n_ctx, num_ctx=settings.ollama.num_ctx,
        keep_alive=settings.ollama.keep_alive, vllm_client=settings.vllm.client)


def allowed_host(host: str, allowed: tuple[str, ...], label: str) -> str:
    """The configured URL ``host`` names, or ``InvalidHostError``. Compared as requests will
    send them (``http.address``): scheme, host and port exactly; credentials none (the
    configured ones are used) or exactly the configured ones. A host that is not a clean URL
    (a backslash, a path) is refused as it is everywhere."""
    wanted = address(host)
    for url in allowed:
        known = address(url)
        if (wanted.scheme, wanted.host, wanted.port) != (known.scheme, known.host, known.port):
            continue
        if wanted.credentials in (None, known.credentials):
            return url
        raise InvalidHostError(
            f"{redact(host)!r} carries a user or password that config.yaml does not give it: "
            f"pick the host without them (the configured ones are used).")
    raise InvalidHostError(
        f"{redact(host)!r} is not one of the hosts config.yaml names for {label}: on this "
        f"shared server pick one of {', '.join(redact(h) for h in allowed) or 'none'}.")


def from_config(config: str | Path | dict[str, Any] | None = None,
                kind: str | None = None) -> Backend:
    """The backend config.yaml selects (``llm.backend``), or ``kind`` with its settings:
    switching backends is a change to config.yaml only.

    ``config`` is a path, an already-parsed mapping, or None for config.yaml."""
    settings = parse_config(config) if isinstance(config, dict) else load_config(config)
    return build(settings, kind or settings.backend)


def probe(settings: Settings, kind: str, host: str = "") -> BackendStatus:
    """List the backend's models; a failure becomes the error's message and its fix."""
    try:
        backend = build(settings, kind, host, connect_timeout=PROBE_CONNECT_TIMEOUT)
        models = backend.list_models()
    except InvalidHostError as exc:
        return BackendStatus(False, message=exc.message, bad_host=True)
    except BackendError as exc:
        return BackendStatus(False, message=exc.message, hint=exc.hint)
    if not models:
        cls = backend_class(kind)
        return BackendStatus(True, [], f"{cls.label} is running but has no models.",
                             cls.missing_model_hint(settings.backends[kind].model)
                             if cls.can_pull_models else "")
    return BackendStatus(True, models)


def model_state(settings: Settings, kind: str, host: str, model: str) -> ModelState | None:
    """The server's version and the model's state, or None when it cannot be asked."""
    try:
        backend = build(settings, kind, host, model, connect_timeout=PROBE_CONNECT_TIMEOUT)
        return backend.model_state()
    except (BackendError, ValueError, KeyError, TypeError, ImportError):
        return None


class ProbeCache:
    """Probes shared by every session of the app (``studio.process`` holds the one): a
    reachable server's model list is reused for ``REACHABLE_TTL_S``, a failure only for
    ``UNREACHABLE_TTL_S``; a model's state for ``STATE_TTL_S``, or until a run on it ends."""

    def __init__(self, reachable_ttl: float = REACHABLE_TTL_S,
                 unreachable_ttl: float = UNREACHABLE_TTL_S) -> None:
        self.reachable_ttl, self.unreachable_ttl = reachable_ttl, unreachable_ttl
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, str], tuple[float, BackendStatus]] = {}
        # (config, kind, host, model) -> (expires, asked at, state)
        self._states: dict[tuple[str, str, str, str],
                           tuple[float, float, ModelState | None]] = {}
        # When the last run on each (backend, host, model) ended: a model state asked for
        # before then is stale (the run may have loaded the model, or changed its window).
        self._runs_ended: dict[tuple[str, str, str], float] = {}

    def get(self, settings: Settings, kind: str, host: str = "") -> BackendStatus:
        key = (settings.path, kind, host)
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None:
            expires, status = entry
            if time.monotonic() < expires:
                return status
        status = probe(settings, kind, host)
        ttl = self.reachable_ttl if status.reachable else self.unreachable_ttl
        with self._lock:
            self._entries[key] = (time.monotonic() + ttl, status)
        return status

    def state(self, settings: Settings, kind: str, host: str, model: str) -> ModelState | None:
        """``model_state``, reused for ``STATE_TTL_S`` unless a run on the model has ended
        since it was asked (``run_ended``)."""
        key = (settings.path, kind, host, model)
        with self._lock:
            entry = self._states.get(key)
        with self._lock:
            ended = self._runs_ended.get((kind, host, model))
        if entry is not None and time.monotonic() < entry[0] and (
                ended is None or ended < entry[1]):
            return entry[2]
        asked = time.monotonic()
        found = model_state(settings, kind, host, model)
        with self._lock:
            self._states[key] = (asked + STATE_TTL_S, asked, found)
        return found

    def run_ended(self, kind: str, host: str, model: str) -> None:
        """A run on this backend, host and model has ended: every cached state of the model is
        asked again at its next use (the sidebar says "model loaded" right after a cold run)."""
        with self._lock:
            self._runs_ended[(kind, host, model)] = time.monotonic()

    def clear(self) -> None:
        """Forget every probe (Refresh models), and what the backends learnt of servers."""
        with self._lock:
            self._entries.clear()
            self._states.clear()
        forget_server_facts()
