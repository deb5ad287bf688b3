"""vLLM's window: the prompt counted exactly with POST /tokenize against max_model_len, and
the server's 400s as ContextLengthError (FakeVLLM measures chats as vLLM 0.32.0 does)."""

from __future__ import annotations

import json
import re

import pytest

from backends.errors import ContextLengthError
from backends.sampling import Sampling
from backends.vllm_backend import VLLMBackend
from studio.pv.library import load_locations, load_system_prompts
from studio.pv.prompt import build_user_prompt
from studio.runs.window import fit_problem
from tests.servers.latency import LatencyServer
from tests.servers.tokens import chat_messages, prompt_tokens
from tests.servers.vllm import CONTEXT_TOO_LONG, FakeVLLM, completion

PROMPT = build_user_prompt(load_locations()[0])
SYSTEM = next(iter(load_system_prompts().values()))
OK = completion("Install 12 panels.")


def test_the_prompt_is_counted_exactly_against_max_model_len() -> None:
    with FakeVLLM(200, OK, max_model_len=8192, check_context=True) as server:
        fit = VLLMBackend(server.url, "smollm2").context_fit(PROMPT, SYSTEM, 2048)
        (asked,) = server.tokenize_requests
    assert fit.exact and fit.prompt_tokens == prompt_tokens(chat_messages(PROMPT, SYSTEM))
    assert fit.window == 8192 and fit.fits
    # The window is the server's --max-model-len; vLLM does not say what the model was
    # trained for.
    assert fit.model_limit is None and "--max-model-len" in fit.limit_by
    assert asked["messages"] == chat_messages(PROMPT, SYSTEM)


def test_a_prompt_over_the_window_is_said_before_and_refused_clearly() -> None:
    with FakeVLLM(200, OK, max_model_len=2048, check_context=True) as server:
        vllm = VLLMBackend(server.url, "smollm2", use_openai_sdk=False)
        problem = fit_problem(vllm.context_fit(PROMPT, SYSTEM, 512), vllm.model)
        assert problem is not None and problem.lower_to is None
        assert "The prompt alone is " in problem.message and "about" not in problem.message
        with pytest.raises(ContextLengthError) as caught:
            vllm.generate(PROMPT, SYSTEM, 512)
    assert caught.value.status_code == 400
    assert "This model's maximum context length is 2048 tokens" in str(caught.value)
    assert "--max-model-len" in caught.value.hint


def test_the_check_names_the_servers_limit_and_its_fix_before_the_run() -> None:
    """It said "smollm2's 2,048-token window (the most it was trained for)": the 2,048 is
    the server's --max-model-len (SmolLM2 was trained for 8,192), and vLLM refuses an
    over-long prompt rather than cutting it."""
    with FakeVLLM(200, OK, max_model_len=2048, check_context=True) as server:
        vllm = VLLMBackend(server.url, "smollm2")
        fit = vllm.context_fit(PROMPT, SYSTEM, 512)
        problem = fit_problem(fit, vllm.model)
    assert problem is not None and not fit.prompt_fits
    message = problem.message
    assert "the most it was trained for" not in message
    assert "the 2,048-token window set by this vLLM server's --max-model-len" in message
    assert f"The prompt alone is {fit.prompt_tokens:,} tokens (counted exactly)" in message
    assert "refuses it (HTTP 400)" in message and "cut" not in message
    assert "restart the vLLM server with --max-model-len 4096" in message  # prompt + 512


def test_an_answer_short_of_room_on_vllm_is_said_to_stop_not_to_cut_the_prompt() -> None:
    with FakeVLLM(200, OK, max_model_len=4096, check_context=True) as server:
        vllm = VLLMBackend(server.url, "smollm2")
        problem = fit_problem(vllm.context_fit(PROMPT, SYSTEM, 2048), vllm.model)
    assert problem is not None and problem.lower_to
    assert f"The answer would stop at {problem.lower_to:,} tokens." in problem.message
    assert "cut" not in problem.message and "trained for)" not in problem.message
    assert "--max-model-len 8192" in problem.message


@pytest.mark.parametrize("sdk", [True, False], ids=["openai-sdk", "requests"])
def test_max_tokens_over_the_window_is_a_context_error_on_both_paths(sdk: bool) -> None:
    with FakeVLLM(200, OK, max_model_len=2048, check_context=True) as server, \
            pytest.raises(ContextLengthError, match="max_model_len=2048"):
        VLLMBackend(server.url, "smollm2", use_openai_sdk=sdk).generate("Hi", "", 4096)


def test_an_answer_without_room_is_offered_the_max_tokens_that_fit() -> None:
    """vLLM shortens such an answer without a word (finish_reason length): say so before."""
    with FakeVLLM(200, OK, max_model_len=4096, check_context=True) as server:
        vllm = VLLMBackend(server.url, "smollm2")
        fit = vllm.context_fit(PROMPT, SYSTEM, 2048)
        problem = fit_problem(fit, vllm.model)
        assert problem is not None and problem.lower_to == 4096 - fit.prompt_tokens
        stream = vllm.stream(PROMPT, SYSTEM, Sampling(max_tokens=2048))
        stream.read_all()
    assert stream.stats.context_window == 4096


def test_the_window_is_in_the_statistics_on_every_path() -> None:
    with FakeVLLM(200, OK, max_model_len=4096) as server:
        for sdk in (True, False):
            answer = VLLMBackend(server.url, "smollm2", use_openai_sdk=sdk).generate("Hi")
            assert answer.stats.context_window == 4096


def test_model_state_is_the_version_and_the_served_window() -> None:
    with FakeVLLM(200, OK, max_model_len=4096, version="0.32.0") as server:
        state = VLLMBackend(server.url, "smollm2").model_state()
    assert state.server_version == "0.32.0" and state.loaded and state.window == 4096
    assert state.notes() == ["v0.32.0", "model loaded (4,096-token window)"]


def test_a_server_without_tokenize_gets_an_estimate() -> None:
    """An OpenAI-compatible server that is not vLLM (no /tokenize): the length estimate."""
    with LatencyServer(latency=0.0) as server:
        fit = VLLMBackend(server.url, "smollm2").context_fit(PROMPT, SYSTEM, 256)
    assert not fit.exact and fit.prompt_tokens > 1000


ADVISES_LOWER_MAX_TOKENS = re.compile(r"(?i)lower max tokens(?! cannot)")


@pytest.mark.parametrize("sdk", [True, False], ids=["openai-sdk", "requests"])
def test_a_prompt_alone_over_the_window_is_not_advised_lower_max_tokens(sdk: bool) -> None:
    """vLLM's 400 says the prompt alone is over the window: only a shorter prompt or a
    larger --max-model-len helps."""
    with FakeVLLM(200, OK, max_model_len=2048, check_context=True) as server, \
            pytest.raises(ContextLengthError) as caught:
        VLLMBackend(server.url, "smollm2", use_openai_sdk=sdk).generate(PROMPT, SYSTEM, 64)
    hint = caught.value.hint
    assert "Shorten the prompt" in hint and "--max-model-len" in hint
    assert "2,048-token window" in hint
    assert not ADVISES_LOWER_MAX_TOKENS.search(hint), hint


def test_max_tokens_alone_over_the_window_is_advised_lower_max_tokens() -> None:
    with FakeVLLM(200, OK, max_model_len=2048, check_context=True) as server, \
            pytest.raises(ContextLengthError) as caught:
        VLLMBackend(server.url, "smollm2", use_openai_sdk=False).generate("Hi", "", 4096)
    assert caught.value.hint.startswith("Lower max tokens below 2,048")
    assert "Shorten the prompt" not in caught.value.hint


@pytest.mark.parametrize(("messages", "advice"), [
    (7000, "Shorten the prompt (the prompt alone is over the 2,048-token window"),
    (1500, "Lower max tokens to 548 or less"),
])
def test_the_older_vllm_wording_is_read_for_what_can_help(messages: int, advice: str) -> None:
    """Before 0.3x vLLM said "you requested T tokens (P in the messages, C in the
    completion)": the room left after the prompt decides the advice."""
    body = json.loads(json.dumps(CONTEXT_TOO_LONG).replace("7000", str(messages)))
    with FakeVLLM(400, body) as server, pytest.raises(ContextLengthError) as caught:
        VLLMBackend(server.url, "smollm2", use_openai_sdk=False).generate("Hi")
    assert caught.value.hint.startswith(advice), caught.value.hint
