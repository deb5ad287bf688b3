"""A model pull as the pages run it: one job per server and model, its progress in bytes, its
error, Cancel (tests/servers/ollama.py pulls as ollama/ollama's server/images.go does)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import cast

import pytest

from backends.base import Backend
from backends.ollama_backend import OllamaBackend
from backends.stream import PullProgress, PullStream
from studio.runs.pull import Pull, Pulls, registry_host
from studio.settings.access import PASSWORD, Access
from studio.settings.config import ConfigError, parse_config
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
        backend, pulls = OllamaBackend(server.url), Pulls()
        first = pulls.start(backend, server.url, "qwen3:8b")
        second = pulls.start(backend, server.url, "qwen3:8b")
        assert second is first and pulls.of(server.url, "qwen3:8b") is first
        assert first.wait(10)
        assert server.pulls == ["qwen3:8b"]  # one download, not two


# -- who may pull on a shared server (studio.settings.access) --------------------------------------
SHARED = Access(PASSWORD, password="s3cret", admins=("root",))  # names are labels here
NAMED = Access(PASSWORD, passwords={"root": "r", "ann": "a"}, admins=("root",))


@pytest.mark.parametrize(("model", "host"), [
    ("qwen3:8b", ""), ("library/qwen3", ""), ("huihui_ai/qwen3-abliterated:8b", ""),
    ("127.0.0.1:11798/library/evil:latest", "127.0.0.1:11798"),
    ("registry.example.com/team/model", "registry.example.com"),
    ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "hf.co"),
    ("localhost/evil", "localhost"), ("evil.example.com/model", "evil.example.com"),
    ("https://registry.example.com/library/m", "registry.example.com"),
    ("host/ns/model", "host"),  # three segments: Ollama reads the first as the host
])
def test_a_registry_host_is_read_from_the_name_as_ollama_reads_it(model: str,
                                                                 host: str) -> None:
    assert registry_host(model) == host


def test_locally_anyone_pulls_anything() -> None:
    assert Access().pull_refusal("", "127.0.0.1:11798/library/evil:latest") == ""


def test_on_a_shared_server_only_admins_pull_unless_config_lists_the_model() -> None:
    refusal = NAMED.pull_refusal("ann", "qwen3:8b")
    assert "only an admin" in refusal and "qwen3:8b" in refusal
    assert NAMED.pull_refusal("root", "qwen3:8b") == ""
    assert SHARED.pull_refusal("root", "qwen3:8b") != ""  # a typed name is no admin
    assert NAMED.pull_refusal("ann", "qwen3:8b", ("qwen3",)) == ""  # any tag of qwen3
    assert NAMED.pull_refusal("ann", "QWEN3:latest", ("qwen3:latest",)) == ""
    assert NAMED.pull_refusal("ann", "qwen3", ("qwen3:latest",)) == ""  # no tag: latest
    assert NAMED.pull_refusal("ann", "qwen3:32b", ("qwen3:8b",)) != ""
    assert NAMED.pull_refusal("ann", "qwen3-evil", ("qwen3",)) != ""
    no_login_fixed_hosts = Access(allow_custom_hosts=False)
    assert no_login_fixed_hosts.pull_refusal("", "qwen3:8b") != ""


def test_a_model_from_another_registry_is_refused_unless_listed_admins_too() -> None:
    evil = "127.0.0.1:11798/library/evil:latest"
    for rules, user in ((NAMED, "root"), (NAMED, "ann"), (SHARED, "root")):
        refusal = rules.pull_refusal(user, evil)
        assert "another registry (127.0.0.1:11798)" in refusal and "app.pull_allow" in refusal
    assert NAMED.pull_refusal("ann", evil, (evil,)) == ""
    assert NAMED.pull_refusal("root", evil, ("127.0.0.1:11798/library/evil",)) == ""
    assert NAMED.pull_refusal("root", evil, ("library/evil",)) != ""  # not that registry's


def test_cancel_is_for_whoever_started_the_pull_or_an_admin() -> None:
    assert NAMED.may_cancel_pull("ann", "ann") and NAMED.may_cancel_pull("root", "ann")
    assert not NAMED.may_cancel_pull("bob", "ann")
    assert not SHARED.may_cancel_pull("root", "ann")  # a typed admin name proves nothing
    assert Access().may_cancel_pull("", "")


def test_a_pull_records_who_started_it() -> None:
    with FakeOllama(models=[], pullable={"qwen3:8b": LAYERS}, pull_delay=0.05) as server:
        pulls = Pulls()
        first = pulls.start(OllamaBackend(server.url), server.url, "qwen3:8b", started_by="ann")
        second = pulls.start(OllamaBackend(server.url), server.url, "qwen3:8b", started_by="bob")
        assert second is first and first.started_by == "ann"  # bob watches ann's pull
        first.stop()
        assert first.wait(10)


def test_config_lists_the_models_anyone_may_pull() -> None:
    settings = parse_config({"app": {"pull_allow": ["qwen3", "llama3.1:8b"]}})
    assert settings.pull_allow == ("qwen3", "llama3.1:8b")
    with pytest.raises(ConfigError, match="pull_allow"):
        parse_config({"app": {"pull_allow": ["qwen3 ; rm -rf"]}})


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
    job = Pull(cast(Backend, puller), "llava:7b").start()
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
    job = Pull(cast(Backend, puller), "llava:7b").start()
    for _ in lines:
        assert puller.recorded.acquire(timeout=5)
        assert job.fraction < 1.0 and "100%" not in job.describe()
        puller.go.release()
    assert job.wait(5) and not job.succeeded and job.fraction < 1.0
