"""Context windows: how many tokens a prompt takes (an estimate calibrated per model) and
whether a run's prompt and answer fit the window it gets (``ContextFit``).

A prompt longer than the server's window is not refused by every server (Ollama may cut it
without a word), so the app checks before a run; how a backend sizes its window and spots a
cut prompt is its own (Ollama's: ``backends.ollama_backend``).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

# Round window sizes, 2K to 256K tokens: the sizes a window is asked for or raised to.
WINDOW_SIZES = (2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144)

# Characters per token before a model's own count is known: English with figures runs at
# 3.4 (SmolLM2) to 3.9 (llama3) on the PV prompts.
DEFAULT_CHARS_PER_TOKEN = 3.5
TEMPLATE_TOKENS_PER_MESSAGE = 6  # role headers and separators of a chat template
# An estimate is sized up by this much, so that a model that splits text finer than the
# estimate still fits (a calibrated estimate is within a few percent).
ESTIMATE_MARGIN = 1.2


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


def round_window(needed: int, model_limit: int | None = None) -> int:
    """The smallest round size that holds ``needed`` tokens (the largest when none does),
    never above the model's trained length."""
    window = next((size for size in WINDOW_SIZES if size >= needed), WINDOW_SIZES[-1])
    return min(window, model_limit) if model_limit else window


def sized_prompt(estimate: int, exact: bool) -> int:
    """Prompt tokens to make room for: an estimate with its margin, an exact count as is."""
    return estimate if exact else math.ceil(estimate * ESTIMATE_MARGIN)
