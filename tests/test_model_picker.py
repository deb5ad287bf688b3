"""The model picker (AppTest) against a test Ollama: a name typed without a tag is the
server's ``name:latest``, before and after a pull."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio.process import process
from tests.conftest import start_app
from tests.servers.ollama import FakeOllama


def missing(at: AppTest) -> list[str]:
    return [w.value for w in at.sidebar.warning if "is not on the server" in w.value]


def test_a_model_without_a_tag_is_its_latest_on_the_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOllama(models=["mistral:7b", "tinyllama:latest"]) as server:
        at = start_app(tmp_path, monkeypatch, "ollama", server.url, "tinyllama")
    assert missing(at) == []
    assert not [b for b in at.button if b.label.startswith("⬇ Pull")]
    assert at.sidebar.selectbox(key="model_ollama").value == "tinyllama:latest"


def test_after_pulling_a_name_without_a_tag_the_pulled_model_is_selected(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOllama(models=["mistral:7b"], pullable={"tinyllama": [1000]}) as server:
        at = start_app(tmp_path, monkeypatch, "ollama", server.url, "tinyllama")
        assert missing(at)
        (pull,) = [b for b in at.button if b.label.startswith("⬇ Pull")]
        at = pull.click().run()
        job = process().pulls.of(server.url, "tinyllama")
        assert job is not None and job.wait(10) and job.succeeded
        at.run()
        assert not at.exception, at.exception
        assert server.models == ["mistral:7b", "tinyllama:latest"]
    assert missing(at) == []
    assert not [b for b in at.button if b.label.startswith("⬇ Pull")]
    assert at.sidebar.selectbox(key="model_ollama").value == "tinyllama:latest"
