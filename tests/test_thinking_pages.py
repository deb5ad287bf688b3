"""Reasoning models in the app (AppTest): the thinking in its own folded panel, never in the
answer; its figures; the Think control; History and the exports keep it apart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio.records.store import RunStore
from tests.conftest import history_page, start_app, switch_to
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.servers.vllm import FakeVLLM, completion

QWEN = "qwen3:8b"
THOUGHT = "Daily use 53.76 kWh; each 400 W panel gives about 1.7 kWh a day."
ANSWER = "## RECOMMENDATION\n\nInstall **32 panels**."


@pytest.fixture
def server() -> Iterator[FakeOllama]:
    with FakeOllama(models=[QWEN, "llama3.1:8b"], version="0.18.0",
                    capabilities={QWEN: ["completion", "thinking"]},
                    script=Script(tokens=tokenize(ANSWER), thinking=tokenize(THOUGHT))) as fake:
        yield fake


def ollama_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str,
              model: str = QWEN) -> AppTest:
    return start_app(tmp_path, monkeypatch, "ollama", url, model)


def generate(at: AppTest) -> AppTest:
    (button,) = [b for b in at.button if b.label == "Generate"]
    at = button.click().run()
    assert not at.exception, at.exception
    return at


def test_the_thinking_is_folded_apart_from_the_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeOllama) -> None:
    at = generate(ollama_app(tmp_path, monkeypatch, server.url))
    (expander,) = [e for e in at.expander if e.label.startswith("💭 Thinking")]
    assert THOUGHT in "".join(m.value for m in expander.markdown)
    answer = "".join(m.value for m in at.markdown if "RECOMMENDATION" in m.value)
    assert "32 panels" in answer and THOUGHT not in answer
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Time to first thinking token"] != "–"
    assert metrics["Thinking tokens"] == str(len(tokenize(THOUGHT)))
    assert "Output tokens (with thinking)" in metrics
    assert "Tokens/s (server, with thinking)" in metrics

    run = at.session_state["playground_run"]
    assert run.thinking == THOUGHT and run.text == ANSWER
    (stored,) = RunStore(str(tmp_path / "history.sqlite3")).list_runs()
    assert stored.thinking == THOUGHT and stored.text == ANSWER
    assert run.to_dict()["thinking"] == THOUGHT

    history_page(at)
    at.multiselect(key="history_open").set_value([stored.id]).run()
    assert [e for e in at.expander if e.label.startswith("💭 Thinking")]


def test_the_think_control_offers_the_models_settings_and_sends_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeOllama) -> None:
    at = ollama_app(tmp_path, monkeypatch, server.url)
    think = at.sidebar.selectbox(key="think_ollama")
    assert think.options == ["server default", "off", "on", "low", "medium", "high"]
    assert think.value == ""
    generate(at)
    assert "think" not in server.chat_requests[-1]  # by default: nothing, the server decides
    think.set_value("off").run()
    at = generate(at)
    assert server.chat_requests[-1]["think"] is False
    assert not [e for e in at.expander if e.label.startswith("💭 Thinking")]
    assert at.session_state["playground_run"].request.sampling.think == "off"


def test_a_model_that_does_not_think_has_no_think_control(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeOllama) -> None:
    at = ollama_app(tmp_path, monkeypatch, server.url, model="llama3.1:8b")
    assert not [s for s in at.sidebar.selectbox if s.label == "Think"]


NO_THINKING = "no thinking came back"


def start_vllm_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> AppTest:
    return start_app(tmp_path, monkeypatch, "vllm", url, "smollm2")


def test_think_on_for_a_model_that_does_not_think_is_said_in_the_playground(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM offers Think for any model (the template may ignore it): a model that does not
    think took "on" silently."""
    with FakeVLLM(200, completion(ANSWER)) as server:
        at = start_vllm_app(tmp_path, monkeypatch, server.url)
        at = generate(at)
        assert NO_THINKING not in "\n".join(c.value for c in at.caption)  # nothing asked
        at.sidebar.selectbox(key="think_vllm").set_value("on").run()
        at = generate(at)
        assert server.chat_requests[-1]["chat_template_kwargs"] == {"enable_thinking": True}
    run = at.session_state["playground_run"]
    assert run.request.sampling.think == "on" and run.thinking == "" and run.text
    notes = [c.value for c in at.caption if NO_THINKING in c.value]
    assert len(notes) == 1 and "Think was set to on" in notes[0]


def test_think_on_that_brought_no_thinking_is_said_in_its_compare_pane(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeVLLM(200, completion(ANSWER)) as server:
        at = start_vllm_app(tmp_path, monkeypatch, server.url)
        switch_to(at, "compare.py")
        at.selectbox(key="pane1_backend_kind").set_value("vllm").run()
        at.selectbox(key="pane0_think_vllm").set_value("on").run()
        (button,) = [b for b in at.button if b.label == "Compare"]
        at = button.click().run()
        assert not at.exception, at.exception
        comparison = at.session_state["comparison"]
        assert comparison.wait(30)
        at.run()
    notes = [c.value for c in at.caption if NO_THINKING in c.value]
    assert len(notes) == 1 and "Think was set to on" in notes[0]  # pane 1 only
