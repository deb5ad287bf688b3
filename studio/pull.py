"""Pulling a model the server lacks (Ollama's ``POST /api/pull``), on a thread of its own.

One pull per server and model for the whole app: a second tab that asks for the same model
watches the pull already going rather than starting another download. Each pull records who
started it (on a shared server Cancel is theirs, or an admin's: studio.access).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from backends.base import BackendError, ModelPuller, PullProgress, PullStream
from studio.job import Job


class Pull(Job):
    """``Pull(backend, model).start()``; poll ``status``, ``fraction``, ``done``, ``error``."""

    name = "pull"

    def __init__(self, backend: ModelPuller, model: str,
                 on_success: Callable[[], None] | None = None, started_by: str = "") -> None:
        """``on_success`` runs on the pull's thread once the model is there (to drop cached
        model lists); ``started_by``: the user who asked for it."""
        super().__init__()
        self.backend, self.model, self.started_by = backend, model, started_by
        self._on_success = on_success
        self.status = "starting"
        self.error: BackendError | None = None
        self.succeeded = False
        self._layers: dict[str, tuple[int, int]] = {}  # digest -> (completed, total) bytes
        self._stream: PullStream | None = None
        self._lock = threading.Lock()

    def _work(self) -> None:
        try:
            self._stream = self.backend.pull(self.model)
            if self.stopped:
                self._stream.close()
            for progress in self._stream:
                self._record(progress)
            self.succeeded = self.status == "success"
            if self.succeeded and self._on_success is not None:
                self._on_success()
        except BackendError as exc:
            if not self.stopped:
                self.error = exc

    def _cancel(self) -> None:
        if self._stream is not None:
            self._stream.close()

    def _record(self, progress: PullProgress) -> None:
        with self._lock:
            self.status = progress.status
            if progress.digest and progress.total:
                self._layers[progress.digest] = (progress.completed or 0, progress.total)

    @property
    def bytes(self) -> tuple[int, int]:
        """(completed, total) over the layers seen so far."""
        with self._lock:
            layers = list(self._layers.values())
        return sum(done for done, _ in layers), sum(total for _, total in layers)

    @property
    def fraction(self) -> float:
        done, total = self.bytes
        return 1.0 if self.succeeded else (min(done / total, 1.0) if total else 0.0)

    def describe(self) -> str:
        """'pulling 6a0746a1ec1a · 1.2 GB of 4.7 GB (25%)'."""
        done, total = self.bytes
        if self.succeeded:
            return f"Pulled {self.model} ({_size(total)})." if total else f"Pulled {self.model}."
        if self.error is not None:
            return str(self.error)
        if self.stopped:
            return f"Pull of {self.model} cancelled."
        sizes = f" · {_size(done)} of {_size(total)} ({done / total:.0%})" if total else ""
        return f"{self.status}{sizes}"


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


_pulls: dict[tuple[str, str], Pull] = {}
_pulls_lock = threading.Lock()


def pull(backend: ModelPuller, host: str, model: str,
         on_success: Callable[[], None] | None = None, started_by: str = "") -> Pull:
    """The pull of ``model`` on ``host``: the one going on, or a new one started (by
    ``started_by``)."""
    with _pulls_lock:
        going = _pulls.get((host, model))
        if going is not None and not going.done:
            return going
        started = _pulls[(host, model)] = Pull(backend, model, on_success, started_by).start()
        return started


def pull_of(host: str, model: str) -> Pull | None:
    """The latest pull of ``model`` on ``host`` in this app (running or ended), if any."""
    with _pulls_lock:
        return _pulls.get((host, model))


def registry_host(model: str) -> str:
    """The registry a model name points at, '' for Ollama's own. Ollama reads
    ``[host/][namespace/]model[:tag]`` (types/model/name.go, after dropping ``http(s)://``):
    three segments name a host; like Docker, a first segment with '.' or ':', or
    ``localhost``, is taken as a host too. ``127.0.0.1:11798/library/evil:latest`` ->
    ``127.0.0.1:11798``."""
    name = model.strip()
    scheme = next((prefix for prefix in ("http://", "https://")
                   if name.lower().startswith(prefix)), "")
    segments = name[len(scheme):].split("/")
    if len(segments) < 2:
        return ""
    first = segments[0]
    if scheme or len(segments) >= 3 or "." in first or ":" in first \
            or first.lower() == "localhost":
        return first
    return ""
