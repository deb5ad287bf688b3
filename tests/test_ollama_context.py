"""Ollama's context window and model lifecycle, against a test server that handles windows,
cuts, loads and pulls as the ollama/ollama source does (tests/servers/ollama.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from backends.errors import BackendStatusError, ContextLengthError
from backends.ollama_backend import OllamaBackend
from backends.shared import shared
from studio.pv.library import load_locations, load_system_prompts
from studio.pv.prompt import build_user_prompt
from studio.runs.request import PROMPT_TRUNCATED, run_notes
from studio.runs.window import fit_problem
from tests.conftest import wait_until
from tests.servers.ollama import FakeOllama, Script

LOCATIONS = load_locations()
SYSTEM = next(iter(load_system_prompts().values()))
MAX_TOKENS = 2048  # config.yaml's default


def backend(server: FakeOllama, **options: Any) -> OllamaBackend:
    return OllamaBackend(server.url, "llama3.1:8b", **options)


@pytest.mark.parametrize("version", ["0.6.6", "0.12.3", "0.30.11"])
def test_the_30_presets_run_uncut_on_a_server_that_defaults_to_2048(version: str) -> None:
    """Done when: the app sizes the window, so no preset is cut and none is marked cut."""
    assert len(LOCATIONS) == 30
    with FakeOllama(version=version, default_num_ctx=2048,
                    script=Script(tokens=["Install", " 12", " panels."])) as server:
        ollama = backend(server)
        for location in LOCATIONS:
            answer = ollama.generate(build_user_prompt(location), SYSTEM, MAX_TOKENS)
            stats = answer.stats
            assert not stats.prompt_truncated, location.name
            assert stats.context_window is not None and stats.prompt_tokens is not None
            assert stats.prompt_tokens + MAX_TOKENS <= stats.context_window
        assert server.cuts == []
        # Stable sizes: the 30 runs shared one window, so the model loaded once.
        assert len(server.loads) == 1, server.loads


def test_the_estimate_is_calibrated_by_the_first_run() -> None:
    with FakeOllama() as server:
        ollama = backend(server)
        prompt = build_user_prompt(LOCATIONS[0])
        guess = ollama.context_fit(prompt, SYSTEM, MAX_TOKENS).prompt_tokens
        counted = ollama.generate(prompt, SYSTEM, MAX_TOKENS).stats.prompt_tokens
        assert counted is not None
        after = ollama.context_fit(prompt, SYSTEM, MAX_TOKENS).prompt_tokens
        assert guess > 0 and shared().estimator.calibrated(ollama.host, ollama.model)
        assert abs(after - counted) <= counted * 0.01  # the server's own count, learnt


def test_a_model_whose_whole_window_is_smaller_than_the_prompt() -> None:
    """The check says so before the run; a run anyway is marked cut (Ollama 0.12: HTTP 200,
    the start of the prompt gone)."""
    with FakeOllama(trained_context={"llama3.1:8b": 2048}) as server:
        ollama = backend(server)
        prompt = build_user_prompt(LOCATIONS[0])
        fit = ollama.context_fit(prompt, SYSTEM, MAX_TOKENS)
        assert fit.window == 2048 and fit.model_limit == 2048
        assert not fit.fits and not fit.prompt_fits
        problem = fit_problem(fit, ollama.model)
        assert problem is not None and problem.lower_to is None
        assert "(the most it was trained for)" in problem.message
        answer = ollama.generate(prompt, SYSTEM, MAX_TOKENS)
        assert answer.stats.prompt_truncated
        assert run_notes(answer.stats.to_dict()) == [PROMPT_TRUNCATED]
        (cut,) = server.cuts
        assert answer.stats.prompt_tokens == cut["kept"] < cut["prompt_tokens"]


def test_prompt_over_the_window_on_ollama_030_without_context_shift_is_a_clear_error() -> None:
    server = FakeOllama(version="0.30.11", context_shift=False,
                        trained_context={"llama3.1:8b": 2048})
    with server, pytest.raises(ContextLengthError) as caught:
        backend(server).generate(build_user_prompt(LOCATIONS[0]), SYSTEM, 256)
    error = caught.value
    assert error.status_code == 400
    assert "the prompt is longer than the context length" in str(error)
    # The prompt alone is over the window: lower max tokens cannot help, so it is not advised.
    assert "Shorten the prompt" in error.hint and "longer window" in error.hint
    assert "lower max tokens cannot help" in error.hint
    assert not re.search(r"(?i)lower max tokens(?! cannot)", error.hint)


def test_half_window_cut_of_ollama_030_is_marked() -> None:
    with FakeOllama(version="0.30.11", trained_context={"llama3.1:8b": 2048}) as server:
        answer = backend(server).generate(build_user_prompt(LOCATIONS[0]), SYSTEM, 256)
        (cut,) = server.cuts
    assert answer.stats.prompt_tokens == cut["kept"] < 1100
    assert answer.stats.prompt_truncated


def test_a_fixed_num_ctx_is_sent_as_configured() -> None:
    with FakeOllama() as server:
        backend(server, num_ctx=16384, keep_alive="30m").generate("Hi", "", 10)
        (request,) = server.chat_requests
    assert request["options"]["num_ctx"] == 16384
    assert request["keep_alive"] == "30m"


def test_a_short_prompt_reuses_the_bigger_window_the_model_is_loaded_with() -> None:
    """A new num_ctx reloads the model (seconds to minutes): a run that fits the loaded
    window keeps it."""
    with FakeOllama(reload_delay=0.3) as server:
        ollama = backend(server)
        first = ollama.generate(build_user_prompt(LOCATIONS[0]), SYSTEM, MAX_TOKENS)
        second = ollama.generate("What is a kWh?", "", 100)
        assert first.stats.context_window == second.stats.context_window == 8192
        assert server.loads == [("llama3.1:8b", 8192)]
    assert first.stats.cold_start is False  # 0.3 s load: below the cold-start mark
    assert second.stats.server_load_s is not None and second.stats.server_load_s < 0.1


def test_a_slow_load_is_a_cold_start() -> None:
    with FakeOllama(reload_delay=1.2) as server:
        answer = backend(server).generate("Hi", "", 10)
    assert answer.stats.cold_start and "cold start" in run_notes(answer.stats.to_dict())


def test_model_state_says_version_loaded_and_partly_on_cpu() -> None:
    with FakeOllama(version="0.12.3", vram_fraction=0.6) as server:
        ollama = backend(server)
        before = ollama.model_state()
        assert before.server_version == "0.12.3" and before.loaded is False
        assert "model not loaded: the next run starts cold" in before.notes()
        ollama.generate("Hi", "", 10)
        after = ollama.model_state()
    assert after.loaded is True and after.window == 2048
    assert after.cpu_share == pytest.approx(0.4)
    assert after.notes() == ["v0.12.3", "model loaded (2,048-token window)",
                             "partly on CPU (40%)"]


def test_pull_streams_progress_then_the_model_is_listed() -> None:
    with FakeOllama(pullable={"qwen3:8b": [3_000_000, 1_000_000]}) as server:
        ollama = backend(server)
        assert "qwen3:8b" not in ollama.list_models()
        lines = list(ollama.pull("qwen3:8b"))
        assert "qwen3:8b" in ollama.list_models()
    assert lines[0].status == "pulling manifest" and lines[-1].status == "success"
    layers = [line for line in lines if line.total]
    assert {line.total for line in layers} == {3_000_000, 1_000_000}
    done = [line.completed or 0 for line in layers if line.total == 3_000_000]
    assert done == sorted(done) and done[-1] == 3_000_000
    assert any(line.fraction is not None and 0 < line.fraction < 1 for line in layers)


def test_a_pull_error_line_under_http_200_is_raised_with_the_servers_words() -> None:
    with FakeOllama() as server:
        stream = backend(server).pull("no-such-model:1b")
        with pytest.raises(BackendStatusError) as caught:
            list(stream)
    assert "pull model manifest: file does not exist" in str(caught.value)
    assert "ollama.com/library" in caught.value.hint


def test_a_pull_closed_midway_stops_the_download() -> None:
    with FakeOllama(pullable={"qwen3:8b": [50_000_000]}, pull_delay=0.05) as server:
        stream = backend(server).pull("qwen3:8b")
        for line in stream:
            if line.completed:
                stream.close()
        assert list(stream) == []
        assert wait_until(lambda: server.pull_cancels == 1)
        assert "qwen3:8b" not in server.models

