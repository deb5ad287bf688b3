"""What the backends keep across backend objects, one ``Shared`` per process.

A backend object is cheap and made often (every probe and run builds one), but some of what it
learns or loads must outlive it: the token estimate calibrated per model (``TokenEstimator``),
Ollama's ``/api/show`` answers and model digests, vLLM's windows, the model files' digests,
the hosts already warned about, the pooled HTTP session (``backends.http`` makes it) and the
llama.cpp models loaded in this process. They live in one ``Shared`` object.

The backends know nothing of the app, so they reach it through one slot of their own:
``shared()`` returns the current one and ``use(state)`` replaces it. The one made when this
module is imported serves every caller: the app's process object (``studio.process.Process``)
holds it, and so does a caller of the backend layer without the app (the bench, a script). A
test's fresh process object puts a fresh one in the slot.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import requests

from .context import TokenEstimator

# /api/show: a model's trained length and capabilities change only when it is pulled again.
OLLAMA_SHOW_TTL_S = 300.0
VLLM_WINDOW_TTL_S = 60.0  # /v1/models' max_model_len: a restarted server may change it
# /api/tags' digest of a model: it changes when the model is pulled again.
OLLAMA_DIGEST_TTL_S = 60.0

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Expiring(Generic[K, V]):
    """A thread-safe memory of answers, each kept ``ttl_s`` seconds."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._entries: dict[K, tuple[float, V]] = {}

    def remember(self, key: K, compute: Callable[[], V]) -> V:
        """The kept answer for ``key``, or ``compute()``'s, kept from now on (an exception is
        not kept: the next call asks again)."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        value = compute()
        with self._lock:
            self._entries[key] = (time.monotonic() + self.ttl_s, value)
        return value

    def forget(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass
class Loaded:
    """A model loaded in this process and the lock its callers queue on: a llama.cpp context
    is not thread-safe."""

    llama: Any  # llama_cpp.Llama
    lock: threading.Lock = field(default_factory=threading.Lock)


class LoadedModels:
    """The models loaded in this process, one per (file, context size), loaded on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple[str, int], Loaded] = {}

    def get(self, key: tuple[str, int], load: Callable[[], Any]) -> Loaded:
        """The loaded model for ``key``; ``load()`` makes it the first time (under the lock:
        two callers never load the same file twice)."""
        with self._lock:
            if key not in self._models:
                self._models[key] = Loaded(load())
            return self._models[key]

    def is_loaded(self, key: tuple[str, int]) -> bool:
        with self._lock:
            return key in self._models

    def close(self) -> None:
        """Free every model (before interpreter teardown, when llama.cpp's own ``__del__``
        fails; or when a test's process object is replaced)."""
        with self._lock:
            for loaded in self._models.values():
                # Freeing a model under a running generation would crash the process.
                if loaded.lock.acquire(timeout=2):
                    loaded.llama.close()
            self._models.clear()


@dataclass
class Shared:
    """Everything the backends keep beyond one backend object."""

    # One estimator: every run teaches it, whichever page started the run.
    estimator: TokenEstimator = field(default_factory=TokenEstimator)
    # Ollama's /api/show answers by (server URL, model), shared by every backend object.
    ollama_shows: Expiring[tuple[str, str], dict[str, Any]] = field(
        default_factory=lambda: Expiring(OLLAMA_SHOW_TTL_S))
    # vLLM's window (max_model_len, None when it does not say) by (server URL, model).
    vllm_windows: Expiring[tuple[str, str], int | None] = field(
        default_factory=lambda: Expiring(VLLM_WINDOW_TTL_S))
    # Ollama's digest of a model (/api/tags; None: not listed) by (server URL, model).
    ollama_digests: Expiring[tuple[str, str], str | None] = field(
        default_factory=lambda: Expiring(OLLAMA_DIGEST_TTL_S))
    # The sha256 of a model file (the embedded backend's GGUF) by (path, size, mtime): read
    # once per process; a file changed in place has another key.
    file_digests: Expiring[tuple[str, int, int], str] = field(
        default_factory=lambda: Expiring(math.inf))
    # vLLM hosts already warned that the API key wins over their user:password (logged once).
    key_wins_said: set[str] = field(default_factory=set)
    sdk_missing_said: bool = False  # the openai SDK asked for, not installed (logged once)
    models: LoadedModels = field(default_factory=LoadedModels)  # the embedded backend's
    _session: requests.Session | None = field(default=None, repr=False)
    # vLLM's Path A: one openai SDK client per (server URL, API key, timeouts), with its pool.
    _openai_clients: dict[Hashable, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def session(self, make: Callable[[], requests.Session]) -> requests.Session:
        """The pooled HTTP session (keep-alive connections per server, for every backend
        object and thread); ``make()`` (``backends.http``) makes it on first use."""
        with self._lock:
            if self._session is None:
                self._session = make()
            return self._session

    def openai_client(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The openai SDK client for ``key``; ``make()`` (``backends.openai_sdk``) makes it on
        first use."""
        with self._lock:
            if key not in self._openai_clients:
                self._openai_clients[key] = make()
            return self._openai_clients[key]

    def close(self) -> None:
        """Free the loaded models and the pooled connections (a test's, once replaced)."""
        self.models.close()
        with self._lock:
            session, self._session = self._session, None
            clients, self._openai_clients = list(self._openai_clients.values()), {}
        if session is not None:
            session.close()
        for client in clients:
            client.close()

    def forget_server_facts(self) -> None:
        """Drop what was learnt about servers (model info, windows, token ratios): a server
        restarted on the same address may serve other models."""
        self.estimator.forget()
        self.ollama_shows.clear()
        self.ollama_digests.clear()
        self.vllm_windows.clear()


_current = Shared()


def shared() -> Shared:
    """The backends' ``Shared`` of this process."""
    return _current


def use(state: Shared) -> None:
    """Make ``state`` the backends' ``Shared`` (``studio.process`` does, with its own)."""
    global _current
    _current = state
