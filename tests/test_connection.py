"""Hosts checked as typed, and the probe cache that feeds every session's status line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from backends.errors import BackendConnectionError, InvalidHostError
from backends.http import Address, address, check_host, redact
from backends.ollama_backend import OllamaBackend
from backends.sampling import Sampling
from backends.vllm_backend import VLLMBackend
from studio.runs.connection import ProbeCache, build, probe
from studio.runs.request import RunRequest
from studio.runs.runner import Run
from studio.settings.config import Settings, load_config, parse_config
from tests.servers.ollama import FakeOllama, Script
from tests.test_access import Canary


@pytest.mark.parametrize(("typed", "fix"), [
    ("localhost:11434", "has no scheme. Add http:// (or https://): http://localhost:11434."),
    ("http://", "has no host name"),
    ("http:///api/tags", "has no host name"),
    ("http://localhost:11434/api", "has a path; the host is only scheme, name and port: "
                                   "http://localhost:11434."),
    ("http://localhost:11434/?x=1", "has a path"),
    ("ftp://files:21", "has the wrong scheme"),
    ("http://localhost:99999", "has a bad port"),
    ("http://localhost:port", "has a bad port"),
    ("", "The host is empty"),
])
def test_a_malformed_host_gets_the_fix_before_any_request(typed: str, fix: str) -> None:
    with pytest.raises(InvalidHostError) as info:
        check_host(typed)
    assert fix in str(info.value)
    for backend in (OllamaBackend, VLLMBackend):  # nothing is sent: the backend refuses it
        with pytest.raises(InvalidHostError):
            backend(typed)


@pytest.mark.parametrize("typed", ["http://localhost:11434", "https://gpu.lan:8000/",
                                   " http://10.1.2.3:11434 ", "http://user:pw@host:1"])
def test_well_formed_hosts_pass(typed: str) -> None:
    assert check_host(typed) == typed.strip().rstrip("/")


def test_credentials_are_used_but_never_shown(closed_port: int) -> None:
    host = f"http://analyst:S3cretPW@127.0.0.1:{closed_port}"
    backend = OllamaBackend(host)
    assert backend.host == redact(host) == f"http://127.0.0.1:{closed_port}"
    assert "S3cretPW" not in repr(backend)
    with pytest.raises(BackendConnectionError) as info:
        backend.list_models()
    assert "S3cretPW" not in str(info.value) and "analyst" not in str(info.value)
    with pytest.raises(InvalidHostError) as bad:
        OllamaBackend("http://analyst:S3cretPW@127.0.0.1:11434/api")
    assert "S3cretPW" not in str(bad.value)


def test_a_bad_host_is_a_host_problem_not_unreachable(tmp_path: Path) -> None:
    settings = load_config(_config(tmp_path))
    status = probe(settings, "ollama", "localhost:11434")
    assert status.bad_host and not status.reachable
    assert "Add http://" in status.message


def test_a_failed_probe_is_forgotten_fast_a_good_one_kept(tmp_path: Path,
                                                          closed_port: int) -> None:
    """A server started just after a failed probe reads reachable within a moment (new
    sessions must not fall back to the embedded model for ~20 s)."""
    settings = load_config(_config(tmp_path))
    cache = ProbeCache(reachable_ttl=60, unreachable_ttl=0.3)
    host = f"http://127.0.0.1:{closed_port}"
    assert not cache.get(settings, "ollama", host).reachable
    with FakeOllama(port=closed_port) as server:
        assert not cache.get(settings, "ollama", host).reachable  # cached, briefly
        time.sleep(0.35)
        status = cache.get(settings, "ollama", host)
        assert status.reachable and status.models == server.models
    assert cache.get(settings, "ollama", host).reachable  # a good answer is reused
    cache.clear()
    assert not cache.get(settings, "ollama", host).reachable


def test_a_run_that_ends_makes_the_models_state_asked_again(tmp_path: Path) -> None:
    """Right after a run loaded the model, the status line said "model not loaded: the next
    run starts cold" until Refresh (the state is kept a few seconds)."""
    settings = load_config(_config(tmp_path))
    with FakeOllama(script=Script(tokens=["Install", " 12", " panels."])) as server:
        # The process's cache (every session's view), which a run tells when it ends; and a
        # cache no run tells, asked first too.
        other = ProbeCache()
        for cache in (ProbeCache(), other):
            state = cache.state(settings, "ollama", server.url, "llama3.1:8b")
            assert state is not None and state.loaded is False
        request = RunRequest(backend="ollama", host=server.url, model="llama3.1:8b",
                             system="", prompt="How many panels?", sampling=Sampling(max_tokens=16))
        run = Run(OllamaBackend(server.url, "llama3.1:8b"), request, probes=other).start()
        assert run.wait(10) and run.error is None
        state = other.state(settings, "ollama", server.url, "llama3.1:8b")
        assert state is not None and state.loaded is True
        assert "model loaded" in " ".join(state.notes())
        assert other.state(settings, "ollama", server.url, "llama3.1:8b") is state  # kept
        # A run on another model leaves this one's state as it was asked.
        mistral = RunRequest(backend="ollama", host=server.url, model="mistral:7b",
                             system="", prompt="How many panels?", sampling=Sampling(max_tokens=16))
        assert Run(OllamaBackend(server.url, "mistral:7b"), mistral, probes=other).start().wait(10)
        assert other.state(settings, "ollama", server.url, "llama3.1:8b") is state


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("llm:\n  backend: ollama\n")
    return path


# -- a shared server's allow-list, compared as requests will send -------------------------
def shared(host: str, *more: str) -> Settings:
    return parse_config({"llm": {"backend": "ollama", "host": host},
                         "backends": {"ollama": {"hosts": list(more)}},
                         "app": {"allow_custom_hosts": False}})


@pytest.mark.parametrize("typed", [
    "http://127.0.0.1:{canary}\\@127.0.0.1:{allowed}",  # urllib3 stops the host at the \
    "http://127.0.0.1:{allowed}\\@127.0.0.1:{canary}",
    "http://127.0.0.1:{canary}\\\\@127.0.0.1:{allowed}",
    "http://127.0.0.1:{canary}\t@127.0.0.1:{allowed}",
    "http://127.0.0.1:{canary} @127.0.0.1:{allowed}",
])
def test_a_backslash_never_smuggles_a_request_past_the_allow_list(typed: str) -> None:
    with FakeOllama() as allowed, Canary() as canary:
        host = typed.format(canary=canary.port, allowed=allowed.port)
        settings = shared(allowed.url)
        with pytest.raises(InvalidHostError, match="backslash, a space or a control"):
            build(settings, "ollama", host)
        status = probe(settings, "ollama", host)
        assert status.bad_host and not status.reachable
        with pytest.raises(InvalidHostError):  # refused everywhere, not only when shared
            check_host(host)
        with pytest.raises(InvalidHostError):
            OllamaBackend(host)
    assert canary.hits == [] and allowed.chat_requests == []


def test_the_allow_list_compares_scheme_host_port_and_credentials_exactly() -> None:
    with FakeOllama() as allowed, Canary() as canary:
        port = allowed.port
        configured = f"http://demo:s3cret@127.0.0.1:{port}"
        settings = shared(configured)
        for same in (configured, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/",
                     f"HTTP://127.0.0.1:{port}"):
            built = build(settings, "ollama", same)
            assert isinstance(built, OllamaBackend) and built._base_url == configured
        for other in (f"https://127.0.0.1:{port}", f"http://localhost:{port}",
                      f"http://127.0.0.1:{canary.port}", "http://127.0.0.1",
                      f"http://demo:s3cret@127.0.0.1:{canary.port}"):
            with pytest.raises(InvalidHostError, match="not one of the hosts"):
                build(settings, "ollama", other)
        for credentials in ("demo:wrong", "eve:s3cret", "demo", "demo:"):
            with pytest.raises(InvalidHostError, match="user or password") as info:
                build(settings, "ollama", f"http://{credentials}@127.0.0.1:{port}")
            assert "s3cret" not in str(info.value) and "wrong" not in str(info.value)
        default_port = shared("http://127.0.0.1")
        assert build(default_port, "ollama", "http://127.0.0.1:80")  # the scheme's port
    assert canary.hits == []


def test_backends_check_hosts_for_backslashes() -> None:
    for backend in (OllamaBackend, VLLMBackend):
        with pytest.raises(InvalidHostError, match="backslash"):
            backend("http://127.0.0.1:1\\@127.0.0.1:2")
    assert address("http://u:p@Example.org") == Address("http", "example.org", 80, "u:p")
    assert address("https://gpu.lan:8443/") == Address("https", "gpu.lan", 8443, None)
