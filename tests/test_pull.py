"""A model pull as the pages run it: one job per server and model, its progress in bytes, its
error, Cancel (tests/servers/ollama.py pulls as ollama/ollama's server/images.go does)."""

from __future__ import annotations

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
