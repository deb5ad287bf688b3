"""Shared fixtures and helpers: a fresh process object for every test, wire-faithful test
servers and ready-made backends, ``wait_until``, and the one way to start the app under
AppTest (``start_app``, ``open_app``, ``batch_page``, ``history_page``)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from backends.ollama_backend import OllamaBackend
from studio.process import Process, fresh_process
from tests.servers.ollama import FakeOllama, Script


@pytest.fixture(autouse=True)
def app_process() -> Iterator[Process]:
    """Each test starts from a fresh process object (studio.process): nothing learnt about
    servers (a later test's server may get an earlier one's port, with other models and
    windows), no capacity caps from an AppTest's config.yaml, no pulls, batches or logins."""
    made = fresh_process()
    yield made
    made.close()


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


# -- waiting ---------------------------------------------------------------------------------
def caption_lines(at: Any, start: str) -> list[str]:
    """The lines of an AppTest page's captions that start with ``start``, as the page shows
    them (a literal line's escapes undone); a caption may hold several, as the checks' does:
    "Figures right: ..." then "Grounding: ..."."""
    lines = [re.sub(r"\\(.)", r"\1", line) for caption in at.caption
             for line in caption.value.split("\n\n")]
    return [line for line in lines if line.startswith(start)]


def wait_until(condition: Callable[[], object], timeout: float = 10.0,
               poll_s: float = 0.005) -> bool:
    """Whether ``condition()`` comes true within ``timeout`` seconds (asked every ``poll_s``,
    and once more at the deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return bool(condition())


# -- the app under AppTest -------------------------------------------------------------------
ENTRY = str(Path(__file__).parent / "app" / "entry.py")  # app.py, run as the browser runs it
PAGES = Path(__file__).resolve().parents[1] / "pages"


def use_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               config: str | Mapping[str, Any]) -> Path:
    """``config`` (YAML text or a mapping) as the app's config.yaml, in ``tmp_path``; its
    history in ``tmp_path`` too unless it names one (never the real one)."""
    data = (yaml.safe_load(config) or {}) if isinstance(config, str) else dict(config)
    if isinstance(data, dict):
        data.setdefault("app", {}).setdefault("history_db", str(tmp_path / "history.sqlite3"))
        text = yaml.safe_dump(data)
    else:  # not a mapping: written as it is (a test of a broken config.yaml)
        text = str(config)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    monkeypatch.setenv("PV_STUDIO_CONFIG", str(path))
    return path


def open_app(page: str = "", secrets: Mapping[str, Any] | None = None) -> AppTest:
    """A new browser session (AppTest) of the real app with the config.yaml in
    PV_STUDIO_CONFIG (``use_config``), run once without an exception, then on ``page`` (a
    file of pages/) when given. ``secrets``: Streamlit's secrets.toml for it."""
    at = AppTest.from_file(ENTRY, default_timeout=60)
    for key, value in (secrets or {}).items():
        at.secrets[key] = value
    at.run()
    assert not at.exception, at.exception
    return switch_to(at, page) if page else at


def switch_to(at: AppTest, page: str) -> AppTest:
    """The session moved to ``page`` (a file of pages/), drawn without an exception."""
    at.switch_page(str(PAGES / page)).run()
    assert not at.exception, at.exception
    return at


def start_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, host: str,
              model: str, page: str = "") -> AppTest:
    """The app on ``backend`` at ``host`` with ``model`` (no embedded fallback, a history
    in ``tmp_path``), run once, on ``page`` (a file of pages/) when given."""
    use_config(tmp_path, monkeypatch, {
        "llm": {"backend": backend, "host": host, "model": model},
        "app": {"fallback_to_embedded": False}})
    return open_app(page)


def batch_page(at: AppTest | None = None) -> AppTest:
    """The Batch page: of this session, or of a new one (``open_app``)."""
    at = switch_to(at, "batch.py") if at is not None else open_app("batch.py")
    assert at.title[0].value == "📦 Batch"
    return at


def history_page(at: AppTest | None = None) -> AppTest:
    """The History page: of this session, or of a new one (``open_app``)."""
    return switch_to(at, "history.py") if at is not None else open_app("history.py")


# -- a shared server: a login in front of the app ---------------------------------------
PASSWORD = "demo-pass-7"

Start = Callable[..., AppTest]


@pytest.fixture
def start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Start:
    """``start(config, secrets=None)`` -> a new browser session (AppTest) of the app at its
    login form. Without ``secrets`` the shared password is set in the environment."""

    def make(config: dict[str, Any], secrets: dict[str, Any] | None = None) -> AppTest:
        config.setdefault("app", {})["history_db"] = str(tmp_path / "history.sqlite3")
        config["app"].setdefault("fallback_to_embedded", False)
        use_config(tmp_path, monkeypatch, config)
        if secrets is None:
            monkeypatch.setenv("PV_STUDIO_PASSWORD", PASSWORD)
        else:
            monkeypatch.delenv("PV_STUDIO_PASSWORD", raising=False)
        return open_app(secrets=secrets)

    return make


def log_in(at: AppTest, name: str, password: str = PASSWORD) -> AppTest:
    (name_box,) = [box for box in at.text_input if box.label in ("Your name", "User name")]
    (password_box,) = [box for box in at.text_input if box.label == "Password"]
    name_box.input(name)
    password_box.input(password)
    (button,) = [b for b in at.button if b.label == "Log in"]
    button.click().run()
    assert not at.exception, at.exception
    return at


def element_texts(at: AppTest) -> str:
    """Every element's whole message (labels, bodies, options, values, help), the sidebar's
    included: what the websocket carries to the browser."""
    def walk(node: Any) -> Iterator[str]:
        proto = getattr(node, "proto", None)
        if proto is not None:
            yield str(proto)
        for child in getattr(node, "children", {}).values():
            yield from walk(child)
    return "\n".join(walk(at._tree))
