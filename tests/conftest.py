"""Shared fixtures: wire-faithful test servers and ready-made backends."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from backends import forget_server_facts
from backends.ollama_backend import OllamaBackend
from studio.runs.capacity import CAPACITY, Limits
from tests.servers.ollama import FakeOllama, Script


@pytest.fixture(autouse=True)
def fresh_server_facts() -> Iterator[None]:
    """Each test starts with nothing learnt about servers: a later test's server may get an
    earlier one's port, with other models and windows. The app's fair-capacity caps are
    process-wide too: an AppTest's config.yaml must not cap the next test's runs."""
    forget_server_facts()
    yield
    forget_server_facts()
    CAPACITY.configure(Limits())


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture
def ollama(fake_ollama: FakeOllama) -> OllamaBackend:
    """An OllamaBackend pointed at the fake server's first model."""
    return OllamaBackend(fake_ollama.url, model="llama3.1:8b", read_timeout=10)


@pytest.fixture
def script(fake_ollama: FakeOllama) -> Script:
    """The fake server's script for the next chat: tests change it in place."""
    return fake_ollama.script


@pytest.fixture
def closed_port() -> int:
    """A localhost port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
