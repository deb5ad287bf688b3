"""Context windows: how many tokens a prompt takes, which window a run gets, and whether the
server cut the prompt to make it fit.

A prompt longer than the server's window is not refused by every server: Ollama up to the
0.2x releases cuts it from the front (the system prompt goes first) and answers HTTP 200; the
only tell is the final chunk's ``prompt_eval_count`` (ollama/ollama#3839). So the app checks
before a run (``ContextFit``), sizes Ollama's window itself (``choose_window``), and reads the
count afterwards (``prompt_was_cut``).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

# Windows the app asks Ollama for. Few and stable, because changing ``num_ctx`` between
# requests reloads the model (seconds to minutes): runs of similar size share one window.
STABLE_WINDOWS = (2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144)

# Characters per token before a model's own count is known: English with figures runs at
# 3.4 (SmolLM2) to 3.9 (llama3) on the PV prompts.
DEFAULT_CHARS_PER_TOKEN = 3.5
TEMPLATE_TOKENS_PER_MESSAGE = 6  # role headers and separators of a chat template
# An estimate is sized up by this much, so that a model that splits text finer than the
# estimate still fits (a calibrated estimate is within a few percent).
ESTIMATE_MARGIN = 1.2
NUM_KEEP = 4  # tokens Ollama keeps at the front of a cut prompt (api.DefaultOptions)


@dataclass(frozen=True)
class ContextFit:
    """Whether a run's prompt and answer fit the window it will get."""

    prompt_tokens: int  # counted by the model's tokenizer (``exact``) or estimated
    exact: bool
    max_tokens: int
    window: int | None  # the tokens the run's context holds; None when unknown
    model_limit: int | None = None  # the most the model can hold (its trained length)
    # A window fixed by a setting rather than sized for the run: which setting ("this vLLM
    # server's --max-model-len"), and how to raise it, with ``{tokens}`` for the size.
    limit_by: str = ""
    raise_limit: str = ""
    refuses: bool = False  # the server refuses a prompt over the window (not cut it)

    @property
    def needed(self) -> int:
        return self.prompt_tokens + self.max_tokens

    @property
    def fits(self) -> bool:
        return self.window is None or self.needed <= self.window

    @property
    def prompt_fits(self) -> bool:
        """Whether the prompt alone fits, with room for at least a short answer."""
        return self.window is None or self.prompt_tokens + 16 <= self.window

    @property
    def max_tokens_that_fit(self) -> int:
        """The largest max tokens that fits beside this prompt (0 when the prompt does not)."""
        if self.window is None:
            return self.max_tokens
        return max(self.window - self.prompt_tokens, 0)

    def summary(self) -> str:
        """'~2,510 prompt tokens + 2,048 max tokens = 4,558 of a 8,192-token window'."""
        approx = "" if self.exact else "~"
        window = f"a {self.window:,}-token window" if self.window else "an unknown window"
        return (f"{approx}{self.prompt_tokens:,} prompt tokens + {self.max_tokens:,} max "
                f"tokens = {approx}{self.needed:,} of {window}")


class TokenEstimator:
    """Estimates a prompt's tokens from its length, calibrated per (host, model) by the
    counts the server reported for earlier, uncut prompts."""

    def __init__(self, default_chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> None:
        self.default = default_chars_per_token
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], deque[float]] = {}

    def chars_per_token(self, host: str, model: str) -> float:
        with self._lock:
            seen = self._seen.get((host, model))
            # The finest split seen lately: the estimate errs towards more tokens.
            return min(seen) if seen else self.default

    def calibrated(self, host: str, model: str) -> bool:
        with self._lock:
            return bool(self._seen.get((host, model)))

    def estimate(self, host: str, model: str, texts: list[str]) -> int:
        """Tokens of a chat prompt made of these message texts."""
        ratio = self.chars_per_token(host, model)
        chars = sum(len(text) for text in texts)
        return math.ceil(chars / ratio) + TEMPLATE_TOKENS_PER_MESSAGE * len(texts)

    def observe(self, host: str, model: str, texts: list[str], tokens: int) -> None:
        """Learn from a count the server reported for an uncut prompt."""
        chars = sum(len(text) for text in texts)
        content_tokens = tokens - TEMPLATE_TOKENS_PER_MESSAGE * len(texts)
        if chars < 200 or content_tokens <= 0:
            return  # too short to say anything about the text's ratio
        with self._lock:
            self._seen.setdefault((host, model), deque(maxlen=5)).append(chars / content_tokens)

    def forget(self) -> None:
        with self._lock:
            self._seen.clear()


def choose_window(needed: int, *, model_limit: int | None = None,
                  loaded: int | None = None) -> int:
    """The window to ask for: the one the model is loaded with if it is big enough (no
    reload), else the smallest stable size that holds ``needed``; never above the model's
    trained length (Ollama caps it there anyway)."""
    if loaded is not None and loaded >= needed:
        window = loaded
    else:
        window = next((size for size in STABLE_WINDOWS if size >= needed), STABLE_WINDOWS[-1])
    return min(window, model_limit) if model_limit else window


def sized_prompt(estimate: int, exact: bool) -> int:
    """Prompt tokens to make room for: an estimate with its margin, an exact count as is."""
    return estimate if exact else math.ceil(estimate * ESTIMATE_MARGIN)


def prompt_was_cut(reported: int | None, expected: int, window: int | None) -> bool:
    """Whether the server's prompt token count shows that it cut the prompt.

    ``expected`` is the calibrated estimate. A cut prompt fills the window (Ollama up to
    0.2x keeps ``num_ctx`` tokens), or about half of it (0.30+ with context shift keeps
    ``num_ctx - (num_ctx - num_keep) / 2``, ollama#17427), or is far below the prompt's size
    for any other reason. A count near the estimate is never a cut: estimates are within
    ~20% once calibrated, and the default ratio is near the models' own.
    """
    if reported is None or reported <= 0:
        return False  # no count (some versions omit it for a cached prompt): no evidence
    if window is not None and reported >= window - 8:
        return True  # the prompt filled the window: cut, or no room left for an answer
    if reported < expected * 0.5:
        return True
    if window is not None and expected > window and reported < expected * 0.92:
        # A prompt over the window whose count came back short: before v0.15.5 Ollama drops
        # whole messages first, the system prompt among them (server/prompt.go chatPrompt).
        return True
    if window is None or reported >= expected * 0.85:
        return False
    half = window - (window - NUM_KEEP) // 2
    return abs(reported - half) <= 8
