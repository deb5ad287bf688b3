"""The app's wiring, run headless with Streamlit's AppTest against real backends."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio.process import process
from tests.conftest import open_app, use_config
from tests.plain import plain
from tests.servers.ollama import SAMPLE_ANSWER, FakeOllama, prompt_tokens, tokenize

AppFactory = Callable[..., AppTest]


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppFactory:
    """``app(config_text)`` -> an AppTest of the real app using that config.yaml."""

    def make(config: str) -> AppTest:
        use_config(tmp_path, monkeypatch, config)  # its history apart from the real one
        return open_app()

    return make


def ollama_config(url: str, model: str = "llama3.1:8b") -> str:
    return f"llm:\n  backend: ollama\n  host: {url}\n  model: {model}\n"


def text(at: AppTest, index: int) -> str:
    """What the page's text area at ``index`` holds (the system prompt, the user prompt)."""
    value = at.text_area[index].value
    assert value is not None
    return value


def click(at: AppTest, label: str) -> AppTest:
    (button,) = [b for b in at.button if b.label == label]
    return button.click().run()


def test_sidebar_lists_the_servers_models(app: AppFactory, fake_ollama: FakeOllama) -> None:
    at = app(ollama_config(fake_ollama.url))
    backend, model = at.sidebar.selectbox
    assert backend.value == "ollama"
    assert model.options == ["llama3.1:8b", "mistral:7b"]
    assert "Reachable · 2 models" in at.sidebar.success[0].value
    assert at.sidebar.text_input[0].value == fake_ollama.url


def test_generate_streams_an_answer_with_statistics(app: AppFactory,
                                                    fake_ollama: FakeOllama) -> None:
    at = click(app(ollama_config(fake_ollama.url)), "Generate")
    assert not at.exception
    assert any("RECOMMENDATION FOR PV PANEL INSTALLATION" in m.value for m in at.markdown)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Output tokens"] == "36"
    sent = prompt_tokens(fake_ollama.chat_requests[0]["messages"])  # as the server counts
    assert metrics["Prompt tokens"] == f"{sent:,}" and sent > 2000
    assert metrics["Stop reason"] == "Finished"
    assert metrics["Tokens/s (server)"] != "–"
    (request,) = fake_ollama.chat_requests
    assert request["messages"][0]["content"].startswith("You are an expert power grid")
    assert "## DATA CONTEXT" in request["messages"][1]["content"]
    # The window for ~2,600 prompt tokens and 2,048 max tokens (Ollama's default is 4,096).
    assert request["options"] == {"num_predict": 2048, "temperature": 0.2, "num_ctx": 8192}
    assert metrics["Context window"] == "8,192"
    assert at.session_state["playground_run"].text == SAMPLE_ANSWER


def test_sidebar_parameters_reach_the_request(app: AppFactory,
                                              fake_ollama: FakeOllama) -> None:
    at = app(ollama_config(fake_ollama.url))
    at.sidebar.number_input[0].set_value(5)
    at.sidebar.slider[0].set_value(0.7)
    at.sidebar.selectbox[1].set_value("mistral:7b")
    at = click(at.run(), "Generate")
    request = fake_ollama.chat_requests[-1]
    assert request["model"] == "mistral:7b"
    assert request["options"] == {"num_predict": 5, "temperature": 0.7, "num_ctx": 4096}
    assert {m.label: m.value for m in at.metric}["Stop reason"] == "Hit max tokens"
    assert at.sidebar.number_input[0].value == 5  # kept across reruns


def test_repeat_penalty_is_the_servers_unless_set(app: AppFactory,
                                                  fake_ollama: FakeOllama) -> None:
    at = app(ollama_config(fake_ollama.url))
    penalty = at.sidebar.number_input(key="repeat_penalty")
    assert penalty.value is None  # empty: Ollama's own default applies
    at = click(at, "Generate")
    assert "repeat_penalty" not in fake_ollama.chat_requests[-1]["options"]
    at.sidebar.number_input(key="repeat_penalty").set_value(1.25)
    at = click(at.run(), "Generate")
    assert fake_ollama.chat_requests[-1]["options"]["repeat_penalty"] == 1.25
    assert at.session_state["playground_run"].to_dict()["parameters"]["repeat_penalty"] == 1.25


def test_a_looping_answer_is_stopped_and_says_why(app: AppFactory,
                                                  fake_ollama: FakeOllama) -> None:
    fake_ollama.script.tokens = tokenize("## PV\n" + "- Monthly load: 2.24 kW/m²\n" * 500)
    at = click(app(ollama_config(fake_ollama.url)), "Generate")
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Stop reason"] == "Repetition"
    assert any("started repeating itself" in w.value for w in at.warning)
    run = at.session_state["playground_run"]
    assert run.text.count("- Monthly load: 2.24 kW/m²") == 4


def test_unreachable_server_falls_back_to_embedded_and_says_so(app: AppFactory,
                                                                closed_port: int) -> None:
    at = app(ollama_config(f"http://127.0.0.1:{closed_port}"))
    assert at.sidebar.selectbox[0].value == "embedded"
    notice = plain(at.warning[0].value)
    assert f"Cannot reach Ollama at http://127.0.0.1:{closed_port}." in notice
    assert notice.count(str(closed_port)) == 1  # said once
    assert notice.count("ollama serve") == 1
    assert "Using the embedded model" in notice
    # What the bundled demo model's answers are worth, said plainly while it serves.
    assert "135M parameters" in at.info[0].value and "not advice" in at.info[0].value
    # Picking a backend again is the analyst's choice; the notice goes away.
    at.sidebar.selectbox[0].set_value("ollama").run()
    assert not at.warning
    assert not at.info
    assert "ollama serve" in at.sidebar.error[0].value


def test_embedded_backend_generates_for_real(app: AppFactory, closed_port: int) -> None:
    at = app(ollama_config(f"http://127.0.0.1:{closed_port}"))
    at.sidebar.number_input[0].set_value(8)
    at.text_area[1].set_value("Name one benefit of solar panels.")
    at = click(at.run(), "Generate")
    assert not at.exception
    run = at.session_state["playground_run"]
    assert run.request.backend == "embedded"
    assert run.text.strip()
    assert 0 < run.stats.output_tokens <= 8


def test_missing_model_shows_the_pull_command(app: AppFactory,
                                              fake_ollama: FakeOllama) -> None:
    at = app(ollama_config(fake_ollama.url, model="llama3.1:70b"))
    assert "`ollama pull llama3.1:70b`" in plain(at.sidebar.warning[0].value)


def test_server_error_is_a_message_not_a_traceback(app: AppFactory,
                                                   fake_ollama: FakeOllama) -> None:
    fake_ollama.script.status = 500
    fake_ollama.script.error = "llama runner process has terminated"
    at = click(app(ollama_config(fake_ollama.url)), "Generate")
    assert not at.exception
    assert "llama runner process has terminated" in at.error[0].value


def test_mid_stream_error_keeps_the_partial_answer(app: AppFactory,
                                                   fake_ollama: FakeOllama) -> None:
    fake_ollama.script.error_after = 5
    at = click(app(ollama_config(fake_ollama.url)), "Generate")
    assert "RECOMMENDATION FOR PV" in " ".join(m.value for m in at.markdown)
    assert "partial answer above is kept" in at.error[0].value


def test_presets_fill_the_prompts(app: AppFactory, fake_ollama: FakeOllama) -> None:
    at = app(ollama_config(fake_ollama.url))
    location = at.selectbox[0]
    assert location.value == "San Diego, CA"
    assert "53.76 kWh" in text(at, 1)
    other = location.options[1]
    location.set_value(other.removesuffix(" (sample data)")).run()
    assert "53.76 kWh" not in text(at, 1)
    assert "Sample household data" in text(at, 1)
    assert any("Prompt size:" in c.value and "tokens" in c.value for c in at.caption)


def test_json_download_has_everything(app: AppFactory, fake_ollama: FakeOllama) -> None:
    at = click(app(ollama_config(fake_ollama.url)), "Generate")
    data = at.session_state["playground_run"].to_dict()
    json.dumps(data)
    assert data["backend"] == "ollama" and data["model"] == "llama3.1:8b"
    assert data["host"] == fake_ollama.url
    assert data["answer"] == SAMPLE_ANSWER
    assert data["statistics"]["output_tokens"] == 36
    assert data["parameters"] == {"max_tokens": 2048, "temperature": 0.2,
                                  "repeat_penalty": None, "think": ""}
    assert data["thinking"] == ""


def test_malformed_config_is_one_clear_message(app: AppFactory) -> None:
    at = app("llm:\n  backend: olama\n")
    assert "llm.backend must be one of ollama, vllm, embedded" in plain(at.error[0].value)
    assert not at.exception


def test_every_backend_shows_its_status_and_fix(app: AppFactory, fake_ollama: FakeOllama,
                                                closed_port: int) -> None:
    at = app(ollama_config(fake_ollama.url) +
             f"backends:\n  vllm:\n    host: http://127.0.0.1:{closed_port}\n")
    lines = [plain(c.value) for c in at.sidebar.caption]
    (ollama,) = [line for line in lines if line.startswith("**Ollama**")]
    (vllm,) = [line for line in lines if line.startswith("**vLLM**")]
    (embedded,) = [line for line in lines if line.startswith("**Embedded")]
    assert "🟢 reachable" in ollama and "🟢 reachable" in embedded
    assert "🔴" in vllm and "python -m vllm.entrypoints.openai.api_server" in vllm


def test_a_host_typed_without_scheme_gets_the_fix(app: AppFactory,
                                                  fake_ollama: FakeOllama) -> None:
    at = app(ollama_config(fake_ollama.url))
    at.sidebar.text_input[0].set_value(f"127.0.0.1:{fake_ollama.port}").run()
    (error,) = at.sidebar.error
    assert error.value.startswith("Check the host:")
    assert f"Add http:// (or https://): http://127.0.0.1:{fake_ollama.port}." \
        in plain(error.value)
    assert "Not reachable" not in error.value
    at = click(at, "Generate")
    assert not at.exception
    assert "has no scheme" in at.error[0].value
    assert fake_ollama.chat_requests == []


def test_an_empty_prompt_is_not_sent(app: AppFactory, fake_ollama: FakeOllama) -> None:
    at = app(ollama_config(fake_ollama.url))
    at.text_area[1].set_value("   \n")
    at = click(at.run(), "Generate")
    assert "The user prompt is empty" in at.warning[0].value
    assert fake_ollama.chat_requests == []
    assert "playground_run" not in at.session_state


def test_a_prompt_over_the_size_cap_is_refused_unsent_and_unrecorded(
        app: AppFactory, fake_ollama: FakeOllama, tmp_path: Path) -> None:
    """A 20 MB prompt once made an 80 MB history: over app.max_prompt_chars (200,000 by
    default) nothing is sent and nothing is recorded; the message gives the size and the cap."""
    at = app(ollama_config(fake_ollama.url))
    at.text_area[1].set_value("kWh " * 62_500)  # 250,000 characters
    at = click(at.run(), "Generate")
    assert not at.exception
    (warning,) = [w.value for w in at.warning if "characters" in w.value]
    size = len(text(at, 0)) + 250_000  # system and user prompt together
    assert f"{size:,} characters" in warning and "at most 200,000" in warning
    assert "app.max_prompt_chars" in warning
    assert "Nothing was sent" in warning
    assert fake_ollama.chat_requests == []
    assert "playground_run" not in at.session_state
    history = tmp_path / "history.sqlite3"
    if history.exists():
        with sqlite3.connect(history) as db:
            assert db.execute("SELECT count(*) FROM runs").fetchone() == (0,)


def test_a_run_over_the_users_queue_cap_is_refused_with_a_sentence(
        app: AppFactory, fake_ollama: FakeOllama) -> None:
    """One slot, taken by someone else, and this user's one place in the queue taken: the
    next Generate is refused on the page, and nothing is sent."""
    config = ollama_config(fake_ollama.url) + (
        "app:\n  max_runs_per_backend: 1\n  max_queued_per_user: 1\n")
    at = app(config)
    backend = f"ollama {fake_ollama.url}"
    capacity = process().capacity
    holder = capacity.enter(backend, "someone else")
    waiting = capacity.enter(backend, "")  # this user (no login: '') already waits once
    try:
        at = click(at, "Generate")
        assert not at.exception
        errors = [plain(e.value) for e in at.error]
        assert any("app.max_queued_per_user" in e and "Nothing was sent" in e for e in errors)
        assert fake_ollama.chat_requests == []
    finally:
        capacity.leave(waiting)
        capacity.leave(holder)


def test_the_pages_folder_workaround_still_applies() -> None:
    """ui.state.require_frame() relies on a private Streamlit flag to leave the legacy
    pages/ mode on a fresh server's first request for /compare: fail loudly when an
    upgrade renames it (the browser tests open /compare, /batch and /history directly)."""
    from streamlit.runtime.pages_manager import PagesManager

    assert isinstance(PagesManager.uses_pages_directory, bool | None)


def test_a_refused_generate_leaves_nothing_of_the_last_run_on_screen(
        app: AppFactory, fake_ollama: FakeOllama) -> None:
    """A run, then a host typed with a path and Generate: the page said 'Cannot use this
    backend' above the last run's answer, its figures and its advice."""
    at = click(app(ollama_config(fake_ollama.url)), "Generate")
    assert at.metric and "RECOMMENDATION FOR PV" in " ".join(m.value for m in at.markdown)
    at.sidebar.text_input[0].set_value(f"{fake_ollama.url}/api").run()
    at = click(at, "Generate")
    assert not at.exception
    (error,) = at.main.error  # the sidebar says what is wrong with the host as well
    assert "Cannot use this backend" in plain(error.value)
    assert not at.metric and not at.download_button
    assert "RECOMMENDATION FOR PV" not in " ".join(m.value for m in at.markdown)
    assert len(fake_ollama.chat_requests) == 1
