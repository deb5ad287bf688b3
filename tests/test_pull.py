"""A model pull as the pages run it: one job per server and model, its progress in bytes, its
error, Cancel (tests/servers/ollama.py pulls as ollama/ollama's server/images.go does)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

from backends.base import PullProgress, PullStream
from backends.ollama_backend import OllamaBackend
from studio.pull import Pull, pull, pull_of
from tests.servers.ollama import FakeOllama

LAYERS = [3_000_000_000, 2_000_000]


def test_a_pull_reports_bytes_and_ends_with_the_model_there() -> None:
    with FakeOllama(models=[], pullable={"qwen3:8b": LAYERS}, pull_delay=0.02) as server:
        succeeded: list[bool] = []
        job = Pull(OllamaBackend(server.url), "qwen3:8b",
                   on_success=lambda: succeeded.append(True)).start()
        fractions = []
        while not job.wait(0.01):
            fractions.append(job.fraction)
        assert job.succeeded and succeeded == [True] and job.error is None
        assert job.bytes == (sum(LAYERS), sum(LAYERS))
        assert job.describe() == "Pulled qwen3:8b (3.0 GB)."
        assert any(0 < f < 1 for f in fractions) and fractions == sorted(fractions)
        assert "qwen3:8b" in server.models


def test_the_registrys_error_is_the_jobs_error() -> None:
    with FakeOllama(models=[]) as server:
        job = Pull(OllamaBackend(server.url), "nope:1b").start()
        assert job.wait(5)
    assert not job.succeeded and job.error is not None
    assert "pull model manifest: file does not exist" in job.describe()


def test_stop_cancels_the_download() -> None:
    with FakeOllama(models=[], pullable={"qwen3:8b": LAYERS}, pull_delay=0.1) as server:
        job = Pull(OllamaBackend(server.url), "qwen3:8b").start()
        while job.bytes[0] == 0:
            assert not job.wait(0.01)
        job.stop()
        assert job.wait(5)
    assert job.stopped and not job.succeeded and job.error is None
    assert job.describe() == "Pull of qwen3:8b cancelled."
    assert "qwen3:8b" not in server.models


def test_a_second_tab_watches_the_pull_already_going() -> None:
    with FakeOllama(models=[], pullable={"qwen3:8b": LAYERS}, pull_delay=0.05) as server:
        backend = OllamaBackend(server.url)
        first = pull(backend, server.url, "qwen3:8b")
        second = pull(backend, server.url, "qwen3:8b")
        assert second is first and pull_of(server.url, "qwen3:8b") is first
        assert first.wait(10)
        assert server.pulls == ["qwen3:8b"]  # one download, not two


# A real pull's lines (server/images.go PullModel, ../shared/reference/server-behaviour.md):
# the layers come one after another, each announced when its download starts, so the bytes
# to come grow as layers appear; a cached blob is one line with total = completed.
WEIGHTS, PROJECTOR, TEMPLATE = 4_100_000_000, 624_000_000, 1_500
REAL_PULL = [
    PullProgress("pulling manifest"),
    PullProgress("pulling 170370233dd5", None, WEIGHTS, "sha256:170370233dd5"),  # no completed
    *(PullProgress("pulling 170370233dd5", WEIGHTS * step // 4, WEIGHTS,
                   "sha256:170370233dd5") for step in range(1, 5)),
    PullProgress("pulling 72d6f08a42f6", None, PROJECTOR, "sha256:72d6f08a42f6"),
    *(PullProgress("pulling 72d6f08a42f6", PROJECTOR * step // 2, PROJECTOR,
                   "sha256:72d6f08a42f6") for step in range(1, 3)),
    PullProgress("pulling 43070e2d4e53", TEMPLATE, TEMPLATE, "sha256:43070e2d4e53"),  # cached
    PullProgress("verifying sha256 digest"),
    PullProgress("writing manifest"),
    PullProgress("success"),
]


class SteppedPuller:
    """Hands the pull its lines one at a time: after each, the test looks at the progress."""

    def __init__(self, lines: list[PullProgress]) -> None:
        self.lines = lines
        self.recorded = threading.Semaphore(0)  # the pull took a line and asks for the next
        self.go = threading.Semaphore(0)

    def pull(self, model: str) -> PullStream:
        def lines() -> Iterator[PullProgress]:
            for line in self.lines:
                yield line
                self.recorded.release()
                self.go.acquire(timeout=5)
        return PullStream(lines(), abort=lambda: None)


def test_progress_only_grows_and_reads_100_only_once_pulled() -> None:
    """A new layer made the bar go back (75% -> 67%), and a finished first layer read 100%
    while the rest was still to come."""
    puller = SteppedPuller(REAL_PULL)
    job = Pull(puller, "llava:7b").start()
    shown: list[tuple[float, str]] = []
    for _ in REAL_PULL:
        assert puller.recorded.acquire(timeout=5)
        shown.append((job.fraction, job.describe()))
        puller.go.release()
    assert job.wait(5) and job.succeeded
    fractions = [fraction for fraction, _ in shown]
    assert fractions == sorted(fractions), fractions
    assert all(fraction < 1.0 for fraction in fractions) and job.fraction == 1.0
    percents = [int(m.group(1)) for _, text in shown if (m := re.search(r"(\d+)% in all", text))]
    assert percents == sorted(percents) and max(percents) < 100, shown
    assert 20 <= percents[1] <= 30  # a quarter of the first layer
    # The layer being fetched is named with its own bytes.
    assert "pulling 72d6f08a42f6 · 312.0 MB of 624.0 MB" in shown[7][1], shown[7][1]
    assert job.describe() == "Pulled llava:7b (4.7 GB)."


def test_a_pull_that_ends_before_success_never_reads_100() -> None:
    lines = REAL_PULL[:6]  # the first layer whole, then the stream ends
    puller = SteppedPuller(lines)
    job = Pull(puller, "llava:7b").start()
    for _ in lines:
        assert puller.recorded.acquire(timeout=5)
        assert job.fraction < 1.0 and "100%" not in job.describe()
        puller.go.release()
    assert job.wait(5) and not job.succeeded and job.fraction < 1.0
