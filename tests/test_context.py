"""Context windows: the estimate, the window the app asks for, and the tell of a cut prompt."""

from __future__ import annotations

from typing import cast

import pytest

from backends.base import Backend
from backends.context import ContextFit, TokenEstimator
from backends.ollama_backend import STABLE_WINDOWS, choose_window, prompt_was_cut
from studio.runs.request import COLD_START, PROMPT_TRUNCATED, RunParams, RunRequest, run_notes
from studio.runs.window import (
    PromptCounts,
    check_fit,
    counted_tokens,
    cut_prompt_advice,
    fit_problem,
    prompt_tokens_text,
)
from studio.settings.config import ConfigError, parse_config

TEXT = "Average daily consumption: 53.76 kWh. " * 100  # 3,800 characters


def test_the_estimate_learns_each_models_ratio() -> None:
    estimator = TokenEstimator(default_chars_per_token=3.5)
    before = estimator.estimate("h", "m", [TEXT])
    assert before == pytest.approx(len(TEXT) / 3.5, abs=10)
    estimator.observe("h", "m", [TEXT], 1_500)  # the server counted more tokens
    after = estimator.estimate("h", "m", [TEXT])
    assert after == pytest.approx(1_500, abs=2)
    assert estimator.calibrated("h", "m") and not estimator.calibrated("h", "other")
    assert estimator.estimate("h", "other", [TEXT]) == before


def test_the_estimate_keeps_the_finest_split_seen_lately() -> None:
    estimator = TokenEstimator()
    estimator.observe("h", "m", [TEXT], 1_000)
    estimator.observe("h", "m", [TEXT], 1_200)
    estimator.observe("h", "m", [TEXT], 900)
    assert estimator.estimate("h", "m", [TEXT]) == pytest.approx(1_200, abs=2)


def test_short_prompts_teach_nothing() -> None:
    estimator = TokenEstimator()
    estimator.observe("h", "m", ["hi"], 10)
    assert not estimator.calibrated("h", "m")


@pytest.mark.parametrize(("needed", "limit", "loaded", "window"), [
    (100, None, None, 2048),
    (2049, None, None, 4096),
    (5_000, None, None, 8192),
    (5_000, 4096, None, 4096),  # never above the trained length
    (5_000, None, 32768, 32768),  # the loaded window holds it: no reload
    (5_000, None, 4096, 8192),  # the loaded one is too small: a stable size
    (10**7, None, None, STABLE_WINDOWS[-1]),
])
def test_choose_window(needed: int, limit: int | None, loaded: int | None,
                       window: int) -> None:
    assert choose_window(needed, model_limit=limit, loaded=loaded) == window


@pytest.mark.parametrize(("reported", "expected", "window", "cut"), [
    (2_480, 2_500, 8192, False),  # near the estimate
    (2_900, 2_500, 8192, False),  # above it: a finer tokenizer, no cut
    (2_048, 2_500, 2048, True),  # filled the window (Ollama up to 0.2x)
    (2_044, 2_000, 2048, True),  # filled it although the estimate said it would fit
    (1_026, 2_500, 2048, True),  # about half the window (0.30+ with context shift)
    (700, 2_500, 8192, True),  # far below the prompt's size
    (2_010, 2_300, 2048, True),  # whole messages dropped (the system prompt) to fit
    (None, 2_500, 2048, False),  # no count: no evidence
    (1_800, 2_000, None, False),
])
def test_prompt_was_cut(reported: int | None, expected: int, window: int | None,
                        cut: bool) -> None:
    assert prompt_was_cut(reported, expected, window) is cut


def test_a_fit_says_its_numbers() -> None:
    fit = ContextFit(2_500, False, 2_048, 4_096, 8_192)
    assert not fit.fits and fit.prompt_fits and fit.max_tokens_that_fit == 1_596
    assert fit.summary() == ("~2,500 prompt tokens + 2,048 max tokens = ~4,548 of a "
                             "4,096-token window")
    problem = fit_problem(fit, "llama3.1:8b")
    assert problem is not None and problem.lower_to == 1_596
    assert "llama3.1:8b's 4,096-token window" in problem.message
    assert "lower max tokens to 1,596" in problem.choices and "run anyway" in problem.choices


def test_a_prompt_over_the_whole_window_offers_no_lower_max_tokens() -> None:
    fit = ContextFit(3_000, True, 512, 2_048, 2_048)
    problem = fit_problem(fit, "tiny")
    assert problem is not None and problem.lower_to is None
    assert "The prompt alone is 3,000 tokens" in problem.message
    assert "the most it was trained for" in problem.message
    assert "lower max tokens" not in problem.choices


def embedded_fit(prompt_tokens: int, n_ctx: int, trained: int) -> ContextFit:
    """As the embedded backend says it: a window set by n_ctx in config.yaml, refused."""
    return ContextFit(prompt_tokens, True, 512, n_ctx, trained,
                      limit_by="backends.embedded.n_ctx in config.yaml",
                      raise_limit="set backends.embedded.n_ctx: {tokens} in config.yaml",
                      refuses=True)


def test_a_window_set_by_a_setting_is_named_with_its_fix() -> None:
    problem = fit_problem(embedded_fit(3_000, 2_048, 8_192), "smollm2")
    assert problem is not None and problem.lower_to is None
    assert "the 2,048-token window set by backends.embedded.n_ctx in config.yaml" in \
        problem.message
    assert "set backends.embedded.n_ctx: 4096 in config.yaml" in problem.message
    assert "refuses it" in problem.message and "cut" not in problem.message
    assert "trained for" not in problem.message  # 8,192 is known: no "if" about it


def test_a_setting_at_the_trained_length_asks_for_another_model() -> None:
    problem = fit_problem(embedded_fit(9_000, 8_192, 8_192), "smollm2")
    assert problem is not None
    assert "smollm2's 8,192-token window (the most it was trained for)" in problem.message
    assert "A model with a longer window" in problem.message and "n_ctx: " not in \
        problem.message


def test_one_way_to_say_a_prompts_size() -> None:
    assert prompt_tokens_text(2_860, True) == "2,860 tokens (counted exactly)"
    assert prompt_tokens_text(2_542, False) == "about 2,542 tokens (estimated from its length)"
    fit = ContextFit(2_542, False, 2_048, 4_096, 4_096)
    problem = fit_problem(fit, "m")
    assert problem is not None and prompt_tokens_text(2_542, False) in problem.message


class Counting:
    """A backend whose window check counts exactly (like vLLM's /tokenize)."""

    def __init__(self, count: int, exact: bool = True) -> None:
        self.count, self.exact = count, exact

    def context_fit(self, prompt: str, system: str = "", max_tokens: int = 2048) -> ContextFit:
        return ContextFit(self.count, self.exact, max_tokens, 8_192)


def test_an_exact_count_is_kept_for_the_prompt_editor() -> None:
    """The editor's caption said "about 2,542 tokens" while /tokenize said 2,860: once a check
    has counted this prompt for this model, the editor shows that count."""
    request = RunRequest(backend="vllm", host="http://h:8000", model="smollm2", system="S",
                         prompt="P " * 400)
    counts = PromptCounts()
    params = RunParams("vllm", "http://h:8000", "smollm2")
    assert counted_tokens(counts, params, "S", "P " * 400) is None
    check_fit(cast(Backend, Counting(2_860)), request, counts)
    assert counted_tokens(counts, params, "S", "P " * 400) == 2_860
    assert counted_tokens(counts, params, "S", "P " * 401) is None  # another prompt
    other = RunParams("vllm", "http://h:8000", "other")
    assert counted_tokens(counts, other, "S", "P " * 400) is None
    estimate = RunRequest(backend="ollama", host="h", model="m", system="", prompt="Q")
    check_fit(cast(Backend, Counting(99, exact=False)), estimate, counts)
    assert counted_tokens(counts, RunParams("ollama", "h", "m"), "", "Q") is None


def test_a_cut_prompt_is_not_advised_to_lower_max_tokens() -> None:
    """A server cuts a prompt only when the prompt alone is over the window: lowering max
    tokens cannot help (with Ollama's window sized per run it would shrink the window)."""
    advice = cut_prompt_advice({"prompt_truncated": True, "context_window": 2_048,
                                "prompt_tokens": 2_048})
    assert "max tokens" not in advice.lower()
    assert "2,048-token window" in advice and "shorten the prompt" in advice
    assert "longer window" in advice


def test_a_fit_or_an_unknown_window_is_no_problem() -> None:
    assert fit_problem(ContextFit(2_500, False, 2_048, 8_192), "m") is None
    assert fit_problem(ContextFit(99_999, False, 2_048, None), "m") is None
    assert fit_problem(None, "m") is None


def test_run_notes_name_a_cut_prompt_and_a_cold_start() -> None:
    assert run_notes({"prompt_truncated": True}) == [PROMPT_TRUNCATED]
    assert run_notes({"cold_start": True, "server_load_s": 12.3}) == [COLD_START]
    assert run_notes({}) == []


def test_config_num_ctx_and_keep_alive() -> None:
    settings = parse_config({"backends": {"ollama": {"num_ctx": 8192, "keep_alive": "30m"}}})
    assert settings.ollama.num_ctx == 8192 and settings.ollama.keep_alive == "30m"
    assert parse_config({"backends": {"ollama": {"num_ctx": "auto"}}}).ollama.num_ctx is None
    assert parse_config({}).ollama.num_ctx is None
    assert parse_config({"backends": {"ollama": {"keep_alive": -1}}}).ollama.keep_alive == -1
    with pytest.raises(ConfigError, match="num_ctx must be auto or a number of tokens"):
        parse_config({"backends": {"ollama": {"num_ctx": "big"}}})
    with pytest.raises(ConfigError, match="num_ctx must be auto"):
        parse_config({"backends": {"ollama": {"num_ctx": 100}}})
    with pytest.raises(ConfigError, match="keep_alive must be a duration"):
        parse_config({"backends": {"ollama": {"keep_alive": "five minutes"}}})
