"""Before a run: does the prompt and its answer fit the model's context window?

The backend counts (vLLM's ``/tokenize``, the embedded tokenizer) or estimates (Ollama) the
prompt's tokens and says which window the run would get, and who sets it (the window sized
for the run, up to what the model was trained for; or a setting: vLLM's ``--max-model-len``,
``n_ctx`` in config.yaml). This module turns a misfit into the sentence and the choices the
pages show: lower max tokens, shorten the prompt, a longer window, run anyway. It also keeps
the exact counts it was given, so that the prompt editor shows the same number.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backends.base import Backend
from backends.context import ContextFit, round_window
from backends.errors import BackendError
from studio.runs.request import RunParams, RunRequest

MIN_USEFUL_ANSWER = 64  # lowering max tokens below this leaves no room for a report
COUNTS_KEPT = 256  # exact prompt counts remembered (per backend, host, model and prompt)


@dataclass(frozen=True)
class FitProblem:
    """A misfit, said with its numbers, and the max tokens that would fit (None: none)."""

    message: str
    lower_to: int | None

    @property
    def choices(self) -> str:
        lower = f"lower max tokens to {self.lower_to:,}, " if self.lower_to else ""
        return f"Choices: {lower}shorten the prompt, or run anyway."


def check_fit(backend: Backend, request: RunRequest,
              counts: PromptCounts | None = None) -> ContextFit | None:
    """The backend's check for this request; None when it cannot tell (server down, no
    such model): the run itself will then say what is wrong. An exact count is kept in
    ``counts`` (the process's, ``studio.process``) for ``counted_tokens``."""
    try:
        fit = backend.context_fit(request.prompt, request.system,
                                  request.sampling.max_tokens)
    except (BackendError, ValueError, KeyError, TypeError):
        return None
    if fit.exact and counts is not None:
        counts.put(_count_key(request, request.system, request.prompt), fit.prompt_tokens)
    return fit


def counted_tokens(counts: PromptCounts, params: RunParams, system: str,
                   prompt: str) -> int | None:
    """The exact token count of these prompts for this backend, host and model, once a
    window check has counted them into ``counts`` (None: only the estimate is known)."""
    return counts.get(_count_key(params, system, prompt))


def prompt_tokens_text(tokens: int, exact: bool) -> str:
    """'2,860 tokens (counted exactly)' or 'about 2,542 tokens (estimated from its length)':
    the one way every screen says a prompt's size."""
    if exact:
        return f"{tokens:,} tokens (counted exactly)"
    return f"about {tokens:,} tokens (estimated from its length)"


def fit_problem(fit: ContextFit | None, model: str) -> FitProblem | None:
    """What does not fit, or None when it all fits (or nothing is known)."""
    if fit is None or fit.fits or fit.window is None:
        return None
    window, longer = _window_words(fit, model)
    prompt = prompt_tokens_text(fit.prompt_tokens, fit.exact)
    if not fit.prompt_fits:
        outcome = ("Run anyway and the server refuses it (HTTP 400)." if fit.refuses else
                   "Run anyway and the server cuts the prompt (its start, with the system "
                   "prompt, goes first) or refuses it.")
        return FitProblem(f"The prompt alone is {prompt}: it does not fit {window}. "
                          f"{outcome} {longer}", None)
    room = fit.max_tokens_that_fit
    approx = "" if fit.exact else "about "
    lower_to = room if room >= MIN_USEFUL_ANSWER else None
    outcome = (f"The answer would stop at {approx}{room:,} tokens." if fit.refuses else
               f"The answer could stop at {approx}{room:,} tokens, or the server could cut "
               "the prompt to make room.")
    return FitProblem(f"The prompt is {prompt}; with {fit.max_tokens:,} max tokens that is "
                      f"{approx}{fit.needed:,}: more than {window}. {outcome} {longer}",
                      lower_to)


def _window_words(fit: ContextFit, model: str) -> tuple[str, str]:
    """('this vLLM server's 2,048-token limit (--max-model-len)', how to get a longer one)."""
    assert fit.window is not None
    at_trained = bool(fit.model_limit and fit.window >= fit.model_limit)
    if at_trained or not fit.limit_by:
        window = f"{model}'s {fit.window:,}-token window"
        if at_trained:
            window += " (the most it was trained for)"
        return window, "A model with a longer window would fit it."
    window = f"the {fit.window:,}-token window set by {fit.limit_by}"
    size = round_window(fit.needed, fit.model_limit)
    if size < fit.needed or not fit.raise_limit:  # more than the model was trained for
        return window, "A model with a longer window would fit it."
    fix = fit.raise_limit.format(tokens=size)
    caveat = "" if fit.model_limit else " (if the model was trained for that many)"
    return window, f"To fit prompt and answer, {fix}{caveat}."


def cut_prompt_advice(stats: Mapping[str, Any]) -> str:
    """What to do about a prompt the server cut. A server cuts a prompt only when the prompt
    alone is longer than the window, so lowering max tokens would not help (with an app-sized
    window it would even shrink it)."""
    window = stats.get("context_window")
    within = f" the {window:,}-token window" if window else " the window"
    return (f"The prompt alone was longer than{within}: shorten the prompt, or use a model "
            "(or a server setting) with a longer window.")


class PromptCounts:
    """A small, thread-safe memory of exact prompt counts, the oldest forgotten first
    (``studio.process`` holds the one: every page's check fills it)."""

    def __init__(self, size: int = COUNTS_KEPT) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, ...], int] = OrderedDict()

    def put(self, key: tuple[str, ...], count: int) -> None:
        with self._lock:
            self._items[key] = count
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, key: tuple[str, ...]) -> int | None:
        with self._lock:
            return self._items.get(key)


def _count_key(params: RunParams, system: str, prompt: str) -> tuple[str, ...]:
    digest = hashlib.sha256(f"{system}\0{prompt}".encode()).hexdigest()
    return (params.backend, params.host, params.model, digest)
