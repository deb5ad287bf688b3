"""Before a run: does the prompt and its answer fit the model's context window?

The backend counts (vLLM's ``/tokenize``, the embedded tokenizer) or estimates (Ollama) the
prompt's tokens and says which window the run would get; this module turns a misfit into the
sentence and the choices the pages show: lower max tokens, shorten the prompt, run anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.base import Backend, BackendError
from backends.context import ContextFit
from studio.request import RunRequest

MIN_USEFUL_ANSWER = 64  # lowering max tokens below this leaves no room for a report


@dataclass(frozen=True)
class FitProblem:
    """A misfit, said with its numbers, and the max tokens that would fit (None: none)."""

    message: str
    lower_to: int | None

    @property
    def choices(self) -> str:
        lower = f"lower max tokens to {self.lower_to:,}, " if self.lower_to else ""
        return f"Choices: {lower}shorten the prompt, or run anyway."


def check_fit(backend: Backend, request: RunRequest) -> ContextFit | None:
    """The backend's check for this request; None when it cannot tell (server down, no
    such model): the run itself will then say what is wrong."""
    try:
        return backend.context_fit(request.prompt, request.system, request.max_tokens)
    except (BackendError, ValueError, KeyError, TypeError):
        return None


def fit_problem(fit: ContextFit | None, model: str) -> FitProblem | None:
    """What does not fit, or None when it all fits (or nothing is known)."""
    if fit is None or fit.fits or fit.window is None:
        return None
    approx = "" if fit.exact else "about "
    window = f"{model}'s {fit.window:,}-token window"
    if fit.model_limit and fit.window >= fit.model_limit:
        window += " (the most it was trained for)"
    if not fit.prompt_fits:
        return FitProblem(
            f"The prompt alone is {approx}{fit.prompt_tokens:,} tokens: it does not fit "
            f"{window}. Run anyway and the server cuts the prompt (its start, with the "
            "system prompt, goes first) or refuses it.", None)
    room = fit.max_tokens_that_fit
    lower_to = room if room >= MIN_USEFUL_ANSWER else None
    return FitProblem(
        f"{fit.summary()}: more than {window}. The answer could stop at {approx}{room:,} "
        "tokens, or the server could cut the prompt to make room.", lower_to)
