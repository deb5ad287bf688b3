"""Prompt arithmetic the editors show, and what makes a prompt unfit to send."""

from __future__ import annotations

from dataclasses import dataclass

from backends.context import ESTIMATOR


@dataclass(frozen=True)
class PromptSize:
    characters: int
    tokens: int


def prompt_size(system: str, user: str, host: str = "", model: str = "") -> PromptSize:
    """Characters of both prompts, and the estimate of their tokens that the window check
    uses (calibrated for ``model`` on ``host`` once it has run there)."""
    texts = [text for text in (system, user) if text]
    return PromptSize(len(system) + len(user), ESTIMATOR.estimate(host, model, texts))


def prompt_problem(user: str) -> str | None:
    """Why this user prompt must not be sent (None when it may): an empty question costs a
    model call and records a run that answers nothing."""
    if not user.strip():
        return ("The user prompt is empty: pick a location preset or type a question. "
                "Nothing was sent.")
    return None
