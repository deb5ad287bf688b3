"""The test servers themselves: context windows, truncation and the model lifecycle as the real
Ollama and vLLM servers have them (tests/servers/ollama.py and vllm.py say from which source).
Plain ``requests`` against the fakes, no app code."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from studio.pv.library import load_locations, load_system_prompts
from studio.pv.prompt import build_user_prompt
from tests.servers.ollama import (
    INPUT_TOO_LONG,
    OMITTED,
    PROMPT_TOO_LONG,
    PULL_NOT_FOUND,
    FakeOllama,
    Script,
    chat_messages,
    count_tokens,
    fit_prompt,
    parse_keep_alive,
    prompt_tokens,
)
from tests.servers.tokens import split_tokens
from tests.servers.vllm import FakeVLLM, completion

MODEL = "llama3.1:8b"


def words(n: int) -> str:
    """A text of exactly n tokens."""
    return " ".join(["solar"] * n)


def lines(response: requests.Response) -> Iterator[dict[str, Any]]:
    for raw in response.iter_lines():
        if raw.strip():
            yield json.loads(raw)


def chat(server: FakeOllama, messages: list[dict[str, str]], stream: bool = True,
         **extra: Any) -> tuple[int, dict[str, Any]]:
    """(status, the final line or the error body) of one chat."""
    body = {"model": MODEL, "messages": messages, "stream": stream, **extra}
    with requests.post(f"{server.url}/api/chat", json=body, stream=stream, timeout=10) as r:
        if r.status_code != 200 or not stream:
            return r.status_code, r.json()
        *_, final = lines(r)
        return r.status_code, final


# -- the tokenizer ----------------------------------------------------------------------
def test_tokens_join_back_and_count_like_a_bpe_tokenizer() -> None:
    text = "## DATA CONTEXT\n\n- Annual consumption: 19,622.40 kWh (average daily x 365)\n"
    assert "".join(split_tokens(text)) == text
    assert split_tokens("Average consumption: 19,622.40 kWh") == [
        "Average", " consu", "mptio", "n", ":", " 19", ",", "622", ".", "40", " kWh"]
    assert split_tokens("## Title\n\n**bold**") == ["##", " Title", "\n\n", "**", "bold", "**"]
    assert count_tokens(words(100)) == 100
    assert prompt_tokens(chat_messages("How many panels?", "You are an analyst.")) == 20
    assert prompt_tokens([{"role": "user", "content": words(10)}]) == 10 + 5 + 1


def test_presets_run_at_a_realistic_characters_per_token() -> None:
    prompts = [build_user_prompt(location) for location in load_locations()]
    systems = list(load_system_prompts().values())
    texts = prompts + systems
    ratio = sum(map(len, texts)) / sum(map(count_tokens, texts))
    print(f"fake tokenizer on the {len(prompts)} PV presets and {len(systems)} system prompts: "
          f"{ratio:.2f} characters per token; user prompts "
          f"{min(map(count_tokens, prompts))}-{max(map(count_tokens, prompts))} tokens")
    assert 3.3 <= ratio <= 4.2
    for text in prompts:
        assert 3.3 <= len(text) / count_tokens(text) <= 4.2


# -- Ollama: version and windows ---------------------------------------------------------
def test_version_route() -> None:
    with FakeOllama() as server:
        assert requests.get(f"{server.url}/api/version", timeout=5).json() == {"version": "0.12.3"}
    with FakeOllama(version="0.6.6") as server:
        assert requests.get(f"{server.url}/api/version", timeout=5).json() == {"version": "0.6.6"}


@pytest.mark.parametrize(("version", "window"), [("0.6.6", 2048), ("0.9.7", 4096),
                                                 ("0.12.3", 4096), ("0.15.5", 4096)])
def test_default_window_by_version(version: str, window: int) -> None:
    messages = [{"role": "user", "content": words(3000)}]  # 3006 tokens
    with FakeOllama(version=version) as server:
        status, final = chat(server, messages)
        assert status == 200
        assert final["prompt_eval_count"] == min(prompt_tokens(messages), window)
        assert bool(server.cuts) == (window < 3006)
        (row,) = requests.get(f"{server.url}/api/ps", timeout=5).json()["models"]
        # /api/ps has reported the window since v0.9.7 (ollama#11331)
        assert row.get("context_length") == (None if version == "0.6.6" else window)


def test_default_num_ctx_and_trained_length_bound_the_window() -> None:
    with FakeOllama(default_num_ctx=8192, trained_context={MODEL: 6000}) as server:
        chat(server, [{"role": "user", "content": "hi"}])
        chat(server, [{"role": "user", "content": "hi"}], options={"num_ctx": 1024})
        assert server.loads == [(MODEL, 6000), (MODEL, 1024)]


def test_long_prompt_is_cut_from_the_front_with_a_truthful_count() -> None:
    messages = [{"role": "user", "content": words(5000)}]
    with FakeOllama() as server:
        status, final = chat(server, messages)
    assert status == 200 and final["done"] is True  # nothing says the prompt was cut...
    assert final["prompt_eval_count"] == 4096  # ...but the count: num_keep + the last tokens
    assert server.prompt_counts == [4096]
    assert server.cuts == [{"model": MODEL, "prompt_tokens": 5006, "kept": 4096,
                            "num_ctx": 4096, "dropped_messages": 0}]


def test_v0_12_drops_the_system_message_first_and_v0_15_5_keeps_it() -> None:
    messages = chat_messages(words(3000), system=words(500))  # 3500 + 2 x 5 + 1 tokens
    old = fit_prompt(messages, 2048, "0.12.3")
    assert (old.prompt_tokens, old.dropped_messages, old.kept) == (3511, 1, 2048)
    new = fit_prompt(messages, 2048, "0.15.5")
    assert (new.dropped_messages, new.kept) == (0, 2048)
    fits_alone = chat_messages(words(2000), system=words(500))  # the user message fits alone
    assert fit_prompt(fits_alone, 2048, "0.12.3").kept == 2000 + 5 + 1
    assert fit_prompt(fits_alone, 2048, "0.15.5").kept == 2048


def test_big_enough_num_ctx_means_no_cut() -> None:
    messages = [{"role": "user", "content": words(5000)}]
    with FakeOllama() as server:
        status, final = chat(server, messages, options={"num_ctx": 8192})
    assert status == 200 and final["prompt_eval_count"] == 5006 and server.cuts == []


def test_truncate_false_is_a_400_from_v0_12_6() -> None:
    messages = [{"role": "user", "content": words(5000)}]
    with FakeOllama(version="0.12.6") as server:
        assert chat(server, messages, truncate=False) == (400, {"error": INPUT_TOO_LONG})
        assert server.cuts == [] and server.prompt_counts == []
        assert chat(server, messages)[1]["prompt_eval_count"] == 4096  # the default: cut
    with FakeOllama(version="0.12.3") as server:  # the field did not exist yet
        assert chat(server, messages, truncate=False)[1]["prompt_eval_count"] == 4096


def test_v0_30_llama_server_cuts_to_half_the_window_or_refuses() -> None:
    messages = [{"role": "user", "content": words(5000)}]
    with FakeOllama(version="0.30.11") as server:
        status, final = chat(server, messages)
        assert status == 200
        # num_ctx - max((num_ctx - n_keep) // 2, 1), n_keep = num_keep 4 + BOS
        assert final["prompt_eval_count"] == 4096 - (4096 - 5) // 2 == 2051
        assert server.cuts[0]["kept"] == 2051
        assert chat(server, messages, shift=False) == (400, {"error": PROMPT_TOO_LONG})
    with FakeOllama(version="0.33.0", context_shift=False) as server:
        assert chat(server, messages) == (400, {"error": PROMPT_TOO_LONG})
        assert chat(server, [{"role": "user", "content": words(100)}])[0] == 200
    with FakeOllama(version="0.30.0", context_shift=False) as server:  # before the 400
        assert chat(server, messages)[1]["prompt_eval_count"] == 4095


# -- Ollama: loading ---------------------------------------------------------------------
def test_reload_when_num_ctx_changes_and_not_when_it_stays() -> None:
    messages = [{"role": "user", "content": "hi"}]
    with FakeOllama(reload_delay=0.15) as server:
        started = time.monotonic()
        first = chat(server, messages, options={"num_ctx": 4096})[1]
        assert time.monotonic() - started >= 0.15
        same = chat(server, messages, options={"num_ctx": 4096})[1]
        other = chat(server, messages, options={"num_ctx": 8192}, stream=False)[1]
    assert server.loads == [(MODEL, 4096), (MODEL, 8192)]
    assert 151e6 <= first["load_duration"] < 500e6
    assert 1e6 <= same["load_duration"] < 10e6  # already loaded: ~2 ms
    assert 151e6 <= other["load_duration"] < 500e6
    assert server.load_durations_ns == [first["load_duration"], same["load_duration"],
                                        other["load_duration"]]
    assert first["total_duration"] > first["load_duration"] + first["prompt_eval_duration"]


def test_ps_lists_loaded_models_with_vram_and_window() -> None:
    with FakeOllama(vram_fraction=0.5) as server:
        assert requests.get(f"{server.url}/api/ps", timeout=5).json() == {"models": []}
        chat(server, [{"role": "user", "content": "hi"}], options={"num_ctx": 8192},
             keep_alive="10m")
        (row,) = requests.get(f"{server.url}/api/ps", timeout=5).json()["models"]
    assert set(row) == {"name", "model", "size", "digest", "details", "expires_at",
                        "size_vram", "context_length"}
    assert row["name"] == row["model"] == MODEL and row["context_length"] == 8192
    assert row["size"] > 4920734272  # the weights and the KV cache of the window
    assert row["size_vram"] == int(row["size"] * 0.5)  # half of it on the CPU
    expires = datetime.fromisoformat(row["expires_at"])
    assert 590 < (expires - datetime.now(UTC)).total_seconds() <= 600


def test_keep_alive_forever_and_zero() -> None:
    with FakeOllama() as server:
        chat(server, [{"role": "user", "content": "hi"}], keep_alive=-1)
        (row,) = requests.get(f"{server.url}/api/ps", timeout=5).json()["models"]
        assert datetime.fromisoformat(row["expires_at"]).year > 2300
        chat(server, [{"role": "user", "content": "hi"}], keep_alive=0)  # unload after it
        deadline = time.monotonic() + 3  # the unload follows the answer's last line
        while requests.get(f"{server.url}/api/ps", timeout=5).json() != {"models": []}:
            assert time.monotonic() < deadline, "the model was never unloaded"
            time.sleep(0.01)
        assert chat(server, [], keep_alive="5m", stream=False)[1]["done_reason"] == "load"
        assert chat(server, [], keep_alive=0, stream=False)[1]["done_reason"] == "unload"
        assert server.loaded == {}
        assert chat(server, [{"role": "user", "content": "hi"}], keep_alive="300")[0] == 400
    assert parse_keep_alive("1h30m") == 5400 and parse_keep_alive("-1m") is None
    assert parse_keep_alive(None) == 300 and parse_keep_alive(2.5) == 2.5


# -- Ollama: show and pull ---------------------------------------------------------------
def test_show_gives_the_trained_context_and_404_for_an_unknown_model() -> None:
    with FakeOllama(models=[MODEL, "qwen3:8b"], trained_context={"qwen3:8b": 40960},
                    capabilities={"qwen3:8b": ["completion", "thinking"]}) as server:
        shown = requests.post(f"{server.url}/api/show", json={"model": MODEL}, timeout=5).json()
        assert shown["model_info"]["general.architecture"] == "llama"
        assert shown["model_info"]["llama.context_length"] == 131072
        assert shown["capabilities"] == ["completion"]
        assert shown["details"]["quantization_level"] == "Q4_K_M"
        assert {"modelfile", "parameters", "template", "modified_at"} <= set(shown)
        qwen = requests.post(f"{server.url}/api/show", json={"name": "qwen3:8b"}, timeout=5)
        assert qwen.json()["model_info"]["qwen3.context_length"] == 40960
        assert qwen.json()["capabilities"] == ["completion", "thinking"]
        missing = requests.post(f"{server.url}/api/show", json={"model": "x"}, timeout=5)
        assert (missing.status_code, missing.json()) == (404, {"error": "model 'x' not found"})


def test_pull_streams_progress_then_lists_the_model() -> None:
    with FakeOllama(pullable={"tinyllama": [1000, 3000, 485]}) as server:
        with requests.post(f"{server.url}/api/pull", json={"model": "tinyllama"}, stream=True,
                           timeout=5) as response:
            assert response.headers["Content-Type"] == "application/x-ndjson"
            assert response.headers["Transfer-Encoding"] == "chunked"
            progress = list(lines(response))
        tags = requests.get(f"{server.url}/api/tags", timeout=5).json()["models"]
    statuses = [line["status"] for line in progress]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = progress[1:-3]
    digests = list(dict.fromkeys(line["digest"] for line in layers))
    assert len(digests) == 3
    for digest, total in zip(digests, [1000, 3000, 485], strict=True):
        mine = [line for line in layers if line["digest"] == digest]
        assert digest.startswith("sha256:") and len(digest) == 7 + 64
        assert mine[0] == {"status": f"pulling {digest[7:19]}", "digest": digest,
                           "total": total}  # no "completed" yet (Go's omitempty)
        completed = [line["completed"] for line in mine[1:]]
        assert completed == sorted(completed) and completed[-1] == total
    assert "tinyllama:latest" in [tag["name"] for tag in tags]
    assert server.pulls == ["tinyllama"]


def test_pull_of_an_unknown_model_is_an_error_line_under_200() -> None:
    with FakeOllama() as server:
        response = requests.post(f"{server.url}/api/pull", json={"model": "nope"}, timeout=5)
        assert response.status_code == 200
        assert list(lines(response)) == [{"status": "pulling manifest"},
                                         {"error": PULL_NOT_FOUND}]


def test_pull_without_streaming_is_one_object_or_a_500() -> None:
    with FakeOllama(pullable={"tinyllama:latest": [100]}) as server:
        done = requests.post(f"{server.url}/api/pull", json={"model": "tinyllama",
                                                             "stream": False}, timeout=5)
        assert (done.status_code, done.json()) == (200, {"status": "success"})
        failed = requests.post(f"{server.url}/api/pull", json={"model": "nope",
                                                               "stream": False}, timeout=5)
        assert (failed.status_code, failed.json()) == (500, {"error": PULL_NOT_FOUND})


def test_pull_cancelled_by_a_hang_up_adds_nothing() -> None:
    with FakeOllama(pullable={"tinyllama": [1000, 1000, 1000]}, pull_delay=0.05) as server:
        with requests.post(f"{server.url}/api/pull", json={"model": "tinyllama"}, stream=True,
                           timeout=5) as response:
            received = lines(response)
            assert next(received) == {"status": "pulling manifest"}
            assert next(received)["total"] == 1000
        deadline = time.monotonic() + 2
        while server.pull_cancels == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.pull_cancels == 1
        names = [tag["name"] for tag in
                 requests.get(f"{server.url}/api/tags", timeout=5).json()["models"]]
        assert "tinyllama:latest" not in names and "tinyllama" not in names


# -- vLLM ----------------------------------------------------------------------------------
def test_vllm_tokenize_counts_like_the_chat_does() -> None:
    messages = chat_messages("How many panels?", "You are an analyst.")
    with FakeVLLM(200, completion("ok", completion_tokens=1), check_context=True,
                  max_model_len=4096) as server:
        counted = requests.post(f"{server.url}/tokenize",
                                json={"model": "smollm2", "messages": messages}, timeout=5)
        answer = requests.post(f"{server.url}/v1/chat/completions",
                               json={"model": "smollm2", "messages": messages,
                                     "max_tokens": 100}, timeout=5).json()
        plain = requests.post(f"{server.url}/tokenize",
                              json={"prompt": "Size a PV system.", "return_token_strs": True},
                              timeout=5).json()
        models = requests.get(f"{server.url}/v1/models", timeout=5).json()
    body = counted.json()
    assert counted.status_code == 200
    assert list(body) == ["count", "max_model_len", "tokens", "token_strs"]
    assert body["count"] == len(body["tokens"]) == prompt_tokens(messages) == 20
    assert body["max_model_len"] == 4096 and body["token_strs"] is None
    assert answer["usage"]["prompt_tokens"] == 20
    assert plain["count"] == count_tokens("Size a PV system.") == 5  # SmolLM2: no BOS
    # what vLLM 0.32.0 with SmolLM2 answers too
    assert plain["token_strs"] == ["Size", "\u0120a", "\u0120PV", "\u0120system", "."]
    assert models["data"][0]["max_model_len"] == 4096


def test_vllm_refuses_a_prompt_over_max_model_len_in_0_32_words() -> None:
    messages = [{"role": "user", "content": words(3000)}]
    with FakeVLLM(200, completion("ok"), check_context=True, max_model_len=2048) as server:
        response = requests.post(f"{server.url}/v1/chat/completions",
                                 json={"model": "smollm2", "messages": messages,
                                       "max_tokens": 20}, timeout=5)
        assert response.status_code == 400
        assert response.json() == {"error": {
            "message": "This model's maximum context length is 2048 tokens. However, your "
                       "prompt contains at least 2049 input tokens, which exceeds this limit "
                       "even without any output tokens. Please reduce the length of the input "
                       "prompt. (parameter=input_tokens, value=2049)",
            "type": "BadRequestError", "param": "input_tokens", "code": 400}}
        too_many = requests.post(f"{server.url}/v1/chat/completions",
                                 json={"model": "smollm2", "max_tokens": 4000,
                                       "messages": [{"role": "user", "content": "hi"}]},
                                 timeout=5).json()
        assert too_many["error"]["message"] == (
            "max_tokens=4000 cannot be greater than max_model_len=2048. Please request fewer "
            "output tokens. (parameter=max_tokens, value=4000)")
        # A prompt that fits with less room than max_tokens: answered, the answer cut short.
        fits = [{"role": "user", "content": words(2000)}]  # 2006 tokens: 42 left
        cut = requests.post(f"{server.url}/v1/chat/completions",
                            json={"model": "smollm2", "messages": fits, "max_tokens": 2048},
                            timeout=5).json()
        assert cut["usage"] == {"prompt_tokens": 2006, "completion_tokens": 42,
                                "total_tokens": 2048}
        assert cut["choices"][0]["finish_reason"] == "length"
        # Far too long: refused on its characters before tokenizing (81 = SmolLM2's longest
        # token); the numbers are what vLLM 0.32.0 answered for this very request.
        huge = [{"role": "user", "content": "x" * (2048 * 81 + 10)}]
        chars = requests.post(f"{server.url}/v1/chat/completions",
                              json={"model": "smollm2", "messages": huge, "max_tokens": 20},
                              timeout=5).json()
        assert chars["error"]["message"] == (
            "This model's maximum context length is 2048 tokens. However, your prompt contains "
            "166046 characters (more than 165888 characters, which is the upper bound for 2048 "
            "input tokens). Please reduce the length of the input prompt. "
            "(parameter=input_text, value=166046)")
        assert server.context_errors == 3
        neither = requests.post(f"{server.url}/tokenize", json={"model": "smollm2"}, timeout=5)
        assert neither.status_code == 400 and neither.json()["error"]["param"] == "body.prompt"


# -- Ollama: thinking ----------------------------------------------------------------------
QWEN = "qwen3:8b"
THINKING = {QWEN: ["completion", "thinking"], "gpt-oss:20b": ["completion", "thinking"]}
THOUGHT = ["Size", " the", " array", " first."]
ANSWER = ["Use", " 12", " panels."]


def thinker(version: str = "0.12.4", **script: Any) -> FakeOllama:
    return FakeOllama([MODEL, QWEN, "gpt-oss:20b"], Script(tokens=ANSWER, thinking=THOUGHT,
                                                          **script),
                      version=version, capabilities=THINKING)


def think_chat(server: FakeOllama, model: str = QWEN, stream: bool = True,
               **extra: Any) -> tuple[int, list[dict[str, Any]]]:
    """(status, every line) of one chat; a non-streamed answer or an error is one line."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream,
            **extra}
    with requests.post(f"{server.url}/api/chat", json=body, stream=stream, timeout=10) as r:
        if r.status_code != 200 or not stream:
            return r.status_code, [r.json()]
        return r.status_code, list(lines(r))


def test_ollama_thinking_lines_come_before_the_content() -> None:
    with thinker() as server:
        status, received = think_chat(server, think=True)
    assert status == 200
    *parts, final = received
    assert [p["message"] for p in parts] == [
        *({"role": "assistant", "content": "", "thinking": t} for t in THOUGHT),
        *({"role": "assistant", "content": c} for c in ANSWER)]
    assert final["message"] == {"role": "assistant", "content": ""} and final["done"]
    assert server.think_requests == [True]


def test_ollama_thinks_by_default_from_0_12_4_on_thinking_models_only() -> None:
    with thinker("0.12.4") as server:
        _, qwen = think_chat(server, stream=False)
        _, llama = think_chat(server, model=MODEL, stream=False)
        assert server.think_requests == [OMITTED, OMITTED]
    assert qwen[0]["message"] == {"role": "assistant", "content": "Use 12 panels.",
                                  "thinking": "Size the array first."}
    assert llama[0]["message"] == {"role": "assistant", "content": "Use 12 panels."}


def test_ollama_before_0_12_4_leaves_the_thinking_inline_when_think_is_omitted() -> None:
    with thinker("0.12.3") as server:
        _, received = think_chat(server)
        *parts, final = received
        assert "".join(p["message"]["content"] for p in parts) == \
            "<think>Size the array first.</think>Use 12 panels."
        assert all("thinking" not in p["message"] for p in parts)
        assert final["eval_count"] == 4 + 3 + 2  # the tags are tokens too
        _, on = think_chat(server, think=True, stream=False)  # asked for: parsed out
        assert on[0]["message"]["thinking"] == "Size the array first."
    with thinker("0.8.0") as server:  # no "think" field yet: ignored
        _, old = think_chat(server, think=True, stream=False)
        assert old[0]["message"]["content"].startswith("<think>Size")


def test_ollama_think_false_turns_it_off_but_not_for_gpt_oss() -> None:
    with thinker() as server:
        _, off = think_chat(server, think=False, stream=False)
        _, oss = think_chat(server, model="gpt-oss:20b", think=False, stream=False)
        _, level = think_chat(server, model="gpt-oss:20b", think="low", stream=False)
    assert off[0]["message"] == {"role": "assistant", "content": "Use 12 panels."}
    assert off[0]["eval_count"] == 3
    assert oss[0]["message"]["thinking"] == level[0]["message"]["thinking"] == \
        "Size the array first."


def test_ollama_think_on_a_model_that_cannot_think_is_a_400() -> None:
    with thinker("0.12.5") as server:
        assert think_chat(server, model=MODEL, think=True) == \
            (400, [{"error": '"llama3.1:8b" does not support thinking'}])
        assert think_chat(server, model=MODEL, think=False)[0] == 200
        assert server.loads == [(MODEL, 4096)]  # refused before loading
    with thinker("0.12.3") as server:  # scheduleRunner's error, with the full name
        assert think_chat(server, model=MODEL, think=True) == \
            (400, [{"error": "registry.ollama.ai/library/llama3.1:8b does not support "
                             "thinking"}])
    with thinker("0.12.4") as server:  # v0.12.4 refused even false (#12555 fixed it)
        assert think_chat(server, model=MODEL, think=False)[0] == 400


def test_ollama_think_levels_by_version() -> None:
    with thinker("0.13.0") as server:  # levels were for gpt-oss only until v0.17.7
        assert think_chat(server, think="high") == \
            (400, [{"error": 'think value "high" is not supported for this model'}])
        assert think_chat(server, think="extreme") == (400, [{"error": (
            'invalid think value: "extreme" (must be "high", "medium", "low", true, or '
            'false)')}])
    with thinker("0.17.7") as server:
        _, on = think_chat(server, think="high", stream=False)
        assert on[0]["message"]["thinking"] == "Size the array first."
    with thinker("0.10.0") as server:
        assert think_chat(server, think="high") == (400, [{"error": (
            "json: cannot unmarshal string into Go struct field ChatRequest.think of "
            "type bool")}])


def test_ollama_eval_count_and_num_predict_include_the_thinking() -> None:
    with thinker() as server:
        _, whole = think_chat(server)
        _, cut = think_chat(server, options={"num_predict": 3})
    assert whole[-1]["eval_count"] == 2 + 4 + 3  # <think>, thinking, </think>, answer
    *parts, final = cut
    assert [p["message"].get("thinking") for p in parts] == ["Size", " the"]
    assert (final["done_reason"], final["eval_count"]) == ("length", 3)


def test_ollama_stop_during_thinking_is_seen() -> None:
    gate = threading.Event()
    with thinker(gate=gate) as server:
        with requests.post(f"{server.url}/api/chat", stream=True, timeout=10,
                           json={"model": QWEN, "messages": [{"role": "user", "content": "hi"}]}
                           ) as response:
            first = next(lines(response))
            assert first["message"]["thinking"] == "Size"
        assert server.client_closed.wait(2)
        gate.set()
    assert len(server.hangups) == 1


# -- vLLM: reasoning -------------------------------------------------------------------------
REASONING = ("Capital", " of", " France")


def sse(response: requests.Response) -> list[Any]:
    """The data of every event ([DONE] as the string)."""
    events = []
    for block in response.text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def vllm_chat(server: FakeVLLM, stream: bool = False, **extra: Any) -> Any:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], **extra}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    response = requests.post(f"{server.url}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 200
    return sse(response) if stream else response.json()


@pytest.mark.parametrize(("field", "keys"), [
    ("reasoning", {"reasoning": "Capital of France"}),  # 0.32.0 (v0.16+)
    ("both", {"reasoning": "Capital of France", "reasoning_content": "Capital of France"}),
    ("reasoning_content", {"reasoning_content": "Capital of France"})])  # v0.10
def test_vllm_reasoning_in_one_piece(field: str, keys: dict[str, str]) -> None:
    with FakeVLLM(200, completion("Paris.", completion_tokens=2), reasoning=REASONING,
                  reasoning_field=field) as server:
        answer = vllm_chat(server)
    message = answer["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Paris.", "refusal": None, **keys}
    usage = answer["usage"]
    assert usage["completion_tokens"] == 2 + 3 + 2  # answer, reasoning, the two tags
    assert usage["total_tokens"] == usage["prompt_tokens"] + 7
    details = {"reasoning_tokens": 3} if field == "reasoning" else None
    assert usage.get("completion_tokens_details") == details


def test_vllm_streams_reasoning_deltas_before_the_content() -> None:
    with FakeVLLM(200, completion("ok"), reasoning=REASONING) as server:
        *events, done = vllm_chat(server, stream=True)
    assert done == "[DONE]"
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert deltas == [{"role": "assistant", "content": ""},
                      *({"reasoning": t} for t in REASONING),
                      *({"content": t} for t in server.tokens), {}]
    assert events[-1]["usage"] == {"prompt_tokens": 12, "completion_tokens": 3 + 2 + 5,
                                   "total_tokens": 22,
                                   "completion_tokens_details": {"reasoning_tokens": 3}}
    with FakeVLLM(200, completion("ok"), reasoning=REASONING, reasoning_field="both") as old:
        both = [e["choices"][0]["delta"] for e in vllm_chat(old, stream=True)[:-1]
                if e["choices"]]
    assert both[1] == {"reasoning": "Capital", "reasoning_content": "Capital"}
    assert both[4] == {"content": "The", "reasoning_content": None}  # the validator's copy


def test_vllm_enable_thinking_false_means_no_reasoning() -> None:
    off: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": False}}
    with FakeVLLM(200, completion("Paris.", completion_tokens=2), reasoning=REASONING) as server:
        answer = vllm_chat(server, **off)
        events = vllm_chat(server, stream=True, **off)
        assert server.chat_requests[0]["chat_template_kwargs"] == {"enable_thinking": False}
    assert answer["choices"][0]["message"]["reasoning"] is None
    assert answer["usage"]["completion_tokens"] == 2
    assert answer["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
    assert not any("reasoning" in d for d in deltas)
    assert events[-2]["usage"]["completion_tokens"] == 5


def test_vllm_without_a_parser_sends_the_tags_inline_and_split() -> None:
    with FakeVLLM(200, completion("Paris."), reasoning=REASONING,
                  reasoning_parser=False) as server:
        answer = vllm_chat(server)
        events = vllm_chat(server, stream=True)
    assert answer["choices"][0]["message"]["content"] == "<think>Capital of France</think>Paris."
    assert answer["choices"][0]["message"]["reasoning"] is None
    pieces = [e["choices"][0]["delta"].get("content") for e in events[1:-2]]
    assert pieces[:2] == ["<th", "ink>"] and "</th" in pieces
    assert "".join(p or "" for p in pieces) == "<think>Capital of France</think>The capital " \
                                               "is Paris."
    assert "completion_tokens_details" not in events[-2]["usage"]
