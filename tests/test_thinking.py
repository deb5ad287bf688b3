"""Reasoning models: the thinking travels apart from the answer, on every backend, whether
the server parses it (Ollama ``message.thinking``, vLLM ``reasoning``/``reasoning_content``)
or leaves ``<think>`` tags inline, split across fragments or not."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from backends.errors import BackendStatusError
from backends.ollama_backend import OllamaBackend
from backends.sampling import Sampling
from backends.status import Status
from backends.stream import TokenStream
from backends.thinking import Thinking, ThinkSplitter
from backends.vllm_backend import VLLMBackend
from studio.runs.request import no_thinking_note
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.servers.vllm import FakeVLLM, completion

THOUGHT = "The household uses 53.76 kWh a day; 400 W panels make about 1.7 kWh each."
ANSWER = "## RECOMMENDATION\n\nInstall **32 panels**."
QWEN = "qwen3:8b"


def split(fragments: list[str]) -> tuple[str, str]:
    splitter = ThinkSplitter()
    parts = [part for fragment in fragments for part in splitter.feed(fragment)]
    parts += splitter.flush()
    thinking = "".join(p for p in parts if isinstance(p, Thinking))
    return thinking, "".join(p for p in parts if not isinstance(p, Thinking))


def test_inline_thinking_is_split_off_wherever_the_tags_are_cut() -> None:
    text = f"<think>\n{THOUGHT}\n</think>\n\n{ANSWER}"
    for size in range(1, 12):  # every way of cutting the tags into fragments
        fragments = [text[i:i + size] for i in range(0, len(text), size)]
        assert split(fragments) == (f"\n{THOUGHT}\n", ANSWER), size


@pytest.mark.parametrize(("fragments", "expected"), [
    ([ANSWER], ("", ANSWER)),  # no thinking at all
    (["  ", "<th", "ink>", "x", "</th", "ink>", "Y"], ("x", "Y")),
    (["<think>unfinished thought"], ("unfinished thought", "")),  # stopped while thinking
    (["<thin"], ("", "<thin")),  # not a tag after all: the answer keeps it
    (["Use the <think> tag."], ("", "Use the <think> tag.")),  # a tag quoted later
    (["<think></think>", "Answer"], ("", "Answer")),  # thinking off: empty tags
    (["<think>a</think>", "b <think>c</think>"], ("a", "b <think>c</think>")),
])
def test_splitter_cases(fragments: list[str], expected: tuple[str, str]) -> None:
    assert split(fragments) == expected


def test_the_stream_keeps_thinking_out_of_the_answer_and_times_both() -> None:
    fragments = iter(["<think>", THOUGHT, "</think>", "\n\n", *tokenize(ANSWER)])
    stream = TokenStream(lambda handle: fragments)
    assert "".join(stream) == ANSWER
    assert stream.thinking == THOUGHT and stream.text == ANSWER
    stats = stream.stats
    assert stats.time_to_first_thinking_s is not None and stats.time_to_first_token_s is not None
    assert stats.time_to_first_thinking_s <= stats.time_to_first_token_s
    assert stats.thinking_chars == len(THOUGHT) and stats.thinking_s is not None


def thinking_ollama(**options: Any) -> FakeOllama:
    return FakeOllama(models=[QWEN, "llama3.1:8b"], version="0.12.5",
                      capabilities={QWEN: ["completion", "thinking"]},
                      script=Script(tokens=tokenize(ANSWER), thinking=tokenize(THOUGHT)),
                      **options)


def test_ollama_streams_the_thinking_field_as_thinking() -> None:
    with thinking_ollama() as server:
        answer = OllamaBackend(server.url, QWEN).generate("How many panels?")
        (request,) = server.chat_requests
    assert "think" not in request  # by default the app sends nothing: the server decides
    assert str(answer) == ANSWER.strip() and answer.thinking == THOUGHT
    assert answer.stats.thinking_tokens == len(tokenize(THOUGHT))
    first_thought, first_token = (answer.stats.time_to_first_thinking_s,
                                  answer.stats.time_to_first_token_s)
    assert first_thought is not None and first_token is not None and first_thought < first_token


@pytest.mark.parametrize(("think", "sent"), [("on", True), ("off", False), ("high", "high")])
def test_ollama_sends_the_think_setting(think: str, sent: object) -> None:
    with FakeOllama(models=[QWEN, "gpt-oss:20b"], version="0.18.0",
                    capabilities={QWEN: ["completion", "thinking"],
                                  "gpt-oss:20b": ["completion", "thinking"]},
                    script=Script(tokens=tokenize(ANSWER), thinking=tokenize(THOUGHT))) as server:
        answer = OllamaBackend(server.url, QWEN).stream("Hi", sampling=Sampling(think=think)
                                                        ).read_all()
        assert server.chat_requests[0]["think"] == sent
        assert bool(answer.thinking) is (think != "off")
        assert OllamaBackend(server.url, QWEN).model_state().think_options == (
            "off", "on", "low", "medium", "high")
        assert OllamaBackend(server.url, "gpt-oss:20b").model_state().think_options == (
            "low", "medium", "high")


def test_ollama_before_0_17_7_offers_no_levels_and_a_plain_model_no_control() -> None:
    with thinking_ollama() as server:
        assert OllamaBackend(server.url, QWEN).model_state().think_options == ("off", "on")
        assert OllamaBackend(server.url, "llama3.1:8b").model_state().think_options == ()


def test_ollama_refuses_think_on_a_model_that_cannot_think_with_the_fix() -> None:
    with thinking_ollama() as server, pytest.raises(BackendStatusError) as caught:
        OllamaBackend(server.url, "llama3.1:8b").stream("Hi", sampling=Sampling(think="on")
                                                        ).read_all()
    assert caught.value.status_code == 400
    assert '"llama3.1:8b" does not support thinking' in str(caught.value)
    assert "Think to 'server default'" in caught.value.hint


def test_ollama_before_0_12_4_leaves_the_thinking_inline_and_it_is_split_off() -> None:
    with FakeOllama(models=[QWEN], version="0.12.3",
                    capabilities={QWEN: ["completion", "thinking"]},
                    script=Script(tokens=tokenize(ANSWER), thinking=tokenize(THOUGHT))) as server:
        answer = OllamaBackend(server.url, QWEN).generate("Hi")
    assert answer.thinking == THOUGHT and str(answer) == ANSWER.strip()
    assert "<think>" not in answer


def test_stop_during_thinking_keeps_the_thinking() -> None:
    gate = threading.Event()
    script = Script(tokens=tokenize(ANSWER), thinking=tokenize(THOUGHT), gate=gate)
    with FakeOllama(models=[QWEN], version="0.12.5", script=script,
                    capabilities={QWEN: ["completion", "thinking"]}) as server:
        stream = OllamaBackend(server.url, QWEN).stream("Hi")
        reader = threading.Thread(target=lambda: list(stream))
        reader.start()
        while not stream.thinking:  # the first thinking line arrived; the gate holds the rest
            assert reader.is_alive()
        stream.close()
        reader.join(5)
        assert server.client_closed.wait(5)
    assert stream.thinking == tokenize(THOUGHT)[0] and stream.text == ""
    assert stream.stats.done_reason == "cancelled"


@pytest.mark.parametrize("field", ["reasoning", "both", "reasoning_content"])
@pytest.mark.parametrize("sse", [False, True], ids=["one-piece", "sse"])
def test_vllm_reasoning_under_every_field_name(field: str, sse: bool) -> None:
    with FakeVLLM(200, completion(ANSWER, completion_tokens=30), reasoning_field=field,
                  reasoning=tuple(tokenize(THOUGHT)), tokens=tuple(tokenize(ANSWER))) as server:
        stream = VLLMBackend(server.url, "smollm2").stream("Hi", sse=sse)
        assert "".join(stream).strip() == ANSWER
    assert stream.thinking == THOUGHT
    assert stream.stats.time_to_first_thinking_s is not None


@pytest.mark.parametrize("sdk", [True, False], ids=["openai-sdk", "requests"])
def test_vllm_generate_returns_the_reasoning_apart(sdk: bool) -> None:
    with FakeVLLM(200, completion(ANSWER, completion_tokens=30),
                  reasoning=tuple(tokenize(THOUGHT))) as server:
        answer = VLLMBackend(server.url, "smollm2", use_openai_sdk=sdk).generate("Hi")
    assert str(answer) == ANSWER.strip() and answer.thinking == THOUGHT
    assert answer.stats.thinking_tokens == len(tokenize(THOUGHT))


def test_vllm_without_a_parser_leaves_split_tags_inline_and_they_are_split_off() -> None:
    with FakeVLLM(200, completion(ANSWER), reasoning=tuple(tokenize(THOUGHT)),
                  reasoning_parser=False, tokens=tuple(tokenize(ANSWER))) as server:
        stream = VLLMBackend(server.url, "smollm2").stream("Hi", sse=True)
        assert "".join(stream).strip() == ANSWER
        one_piece = VLLMBackend(server.url, "smollm2").generate("Hi")
    assert stream.thinking == THOUGHT and "<th" not in stream.text
    assert one_piece.thinking == THOUGHT and str(one_piece) == ANSWER.strip()


@pytest.mark.parametrize(("think", "kwargs"), [("off", {"enable_thinking": False}),
                                               ("on", {"enable_thinking": True})])
def test_vllm_think_setting_goes_to_the_chat_template(think: str, kwargs: dict[str, bool]) -> None:
    with FakeVLLM(200, completion(ANSWER), reasoning=tuple(tokenize(THOUGHT))) as server:
        answer = VLLMBackend(server.url, "smollm2").complete("Hi", sampling=Sampling(think=think))
        (request,) = server.chat_requests
    assert request["chat_template_kwargs"] == kwargs
    assert bool(answer.thinking) is (think == "on")


@pytest.mark.parametrize(("think", "thinking", "status", "said"), [
    ("on", "", Status.FINISHED, True),  # asked to think, answered without: say so
    ("high", "  \n", Status.LENGTH, True),  # a level is asked thinking too; blank is none
    ("on", THOUGHT, Status.FINISHED, False),  # it thought
    ("", "", Status.FINISHED, False),  # the server decides: nothing was asked
    ("off", "", Status.FINISHED, False),
    ("on", "", Status.STOPPED, False),  # stopped or failed: no answer to judge
    ("on", "", Status.ERROR, False),
])
def test_a_think_setting_that_brought_no_thinking_is_said(think: str, thinking: str,
                                                          status: str, said: bool) -> None:
    note = no_thinking_note(think, thinking, status)
    assert (note is not None) is said
    if note is not None:
        assert f"Think was set to {think}" in note and "no thinking came back" in note
