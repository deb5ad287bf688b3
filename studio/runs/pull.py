"""Pulling a model the server lacks (Ollama's ``POST /api/pull``), on a thread of its own.

One pull per server and model for the whole app: a second tab that asks for the same model
watches the pull already going rather than starting another download. Each pull records who
started it (on a shared server Cancel is theirs, or an admin's: studio.settings.access).

The stream names a model's layers one after another (server/images.go ``PullModel``), so the
bytes still to come are unknown until the last layer shows up: a new layer makes the total
grow. The progress shown only grows, and reads 100% only once the server says ``success``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from backends.base import Backend
from backends.errors import BackendError
from backends.stream import PullProgress, PullStream
from studio.runs.job import Job

MOST_BEFORE_SUCCESS = 0.99  # the progress shown until the server says success


class Pull(Job):
    """``Pull(backend, model).start()``; poll ``status``, ``fraction``, ``done``, ``error``."""

    name = "pull"

    def __init__(self, backend: Backend, model: str,
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
        self._layer = ""  # the digest of the layer the last line was about
        self._high = 0.0  # the most progress shown so far: it never goes back
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
                self._layer = progress.digest
            else:
                self._layer = ""  # verifying, writing the manifest: no layer's bytes
            done = sum(completed for completed, _ in self._layers.values())
            total = sum(size for _, size in self._layers.values())
            if total:
                # More layers may follow the ones seen so far: never 100% before success.
                self._high = max(self._high, min(done / total, MOST_BEFORE_SUCCESS))

    @property
    def bytes(self) -> tuple[int, int]:
        """(completed, total) over the layers seen so far."""
        with self._lock:
            layers = list(self._layers.values())
        return sum(done for done, _ in layers), sum(total for _, total in layers)

    @property
    def fraction(self) -> float:
        """The pull's progress (0..1): it only grows, and is 1 only once the model is there."""
        if self.succeeded:
            return 1.0
        with self._lock:
            return self._high

    def describe(self) -> str:
        """'pulling 6a0746a1ec1a · 1.2 GB of 4.7 GB · 25% in all': the layer being fetched
        and the whole pull's progress (the bar's)."""
        if self.succeeded:
            total = self.bytes[1]
            return f"Pulled {self.model} ({_size(total)})." if total else f"Pulled {self.model}."
        if self.error is not None:
            return str(self.error)
        if self.stopped:
            return f"Pull of {self.model} cancelled."
        with self._lock:
            status, layer = self.status, self._layers.get(self._layer)
            seen = bool(self._layers)
        sizes = f" · {_size(layer[0])} of {_size(layer[1])}" if layer else ""
        # Rounded down: 99.6% reads 99%, never 100% before the server says success.
        overall = f" · {math.floor(self.fraction * 100)}% in all" if seen else ""
        return f"{status}{sizes}{overall}"


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


class Pulls:
    """The pulls of this process, one per server and model (``studio.process`` holds the
    one): every tab watches the same download."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pulls: dict[tuple[str, str], Pull] = {}

    def start(self, backend: Backend, host: str, model: str,
              on_success: Callable[[], None] | None = None, started_by: str = "") -> Pull:
        """The pull of ``model`` on ``host``: the one going on, or a new one started (by
        ``started_by``)."""
        with self._lock:
            going = self._pulls.get((host, model))
            if going is not None and not going.done:
                return going
            started = Pull(backend, model, on_success, started_by).start()
            self._pulls[(host, model)] = started
            return started

    def of(self, host: str, model: str) -> Pull | None:
        """The latest pull of ``model`` on ``host`` in this app (running or ended), if any."""
        with self._lock:
            return self._pulls.get((host, model))


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
