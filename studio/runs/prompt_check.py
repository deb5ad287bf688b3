"""Prompt arithmetic the editors show, and what makes a prompt unfit to send."""

from __future__ import annotations

from dataclasses import dataclass

from backends.shared import shared


@dataclass(frozen=True)
class PromptSize:
    characters: int
    tokens: int


def prompt_size(system: str, user: str, host: str = "", model: str = "") -> PromptSize:
    """Characters of both prompts, and the estimate of their tokens that the window check
    uses (calibrated for ``model`` on ``host`` once it has run there)."""
    texts = [text for text in (system, user) if text]
    return PromptSize(len(system) + len(user), shared().estimator.estimate(host, model, texts))


def prompt_problem(system: str, user: str, max_chars: int) -> str | None:
    """Why these prompts must not be sent (None when they may): an empty question costs a
    model call and records a run that answers nothing; a prompt over ``max_chars``
    (``app.max_prompt_chars``, system and user prompt together) would fill the server and the
    history (every run keeps its prompt)."""
    if not user.strip():
        return ("The user prompt is empty: pick a location preset or type a question. "
                "Nothing was sent.")
    size = len(system) + len(user)
    if size > max_chars:
        return (f"The prompt is {size:,} characters (system and user prompt together); this "
                f"server takes at most {max_chars:,} (app.max_prompt_chars in config.yaml). "
                "Shorten it. Nothing was sent.")
    return None
