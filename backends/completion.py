"""One reader of an OpenAI chat completion: the JSON body of ``POST /v1/chat/completions``
(non-streaming), and each event's chunk of a streamed one.

Both vLLM paths read their answer here (Path B the raw body; Path A the SDK's
``ChatCompletion.model_dump()``, the same dict), and so does a batch runner's results file
brought into the history (``studio.records.batch_files``): an answer's thinking is split off
the same way wherever it comes from. A server with a reasoning parser sends the thinking in
``reasoning`` (vLLM 0.11.2+; the only field from 0.16) or ``reasoning_content`` (before); one
without leaves it inline, as ``<think>...</think>`` opening the content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .status import Status
from .thinking import Thinking, ThinkSplitter


class CompletionShapeError(ValueError):
    """A body that is not a chat completion (no choices): the message says what it lacks."""


@dataclass(frozen=True)
class Completion:
    """What one chat completion says: the answer and its thinking apart (both stripped), why
    it ended, and the token counts of ``usage`` (None where the server gives none)."""

    text: str
    thinking: str
    finish_reason: str
    prompt_tokens: int | None = None
    output_tokens: int | None = None  # thinking and answer together, as servers count
    thinking_tokens: int | None = None  # usage.completion_tokens_details.reasoning_tokens


def read_completion(body: Any) -> Completion:
    """The first choice of a chat completion body, of any shape a server or a batch runner
    writes; ``CompletionShapeError`` when it has no choice to read."""
    choices = body.get("choices") if isinstance(body, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict):
        raise CompletionShapeError("The result has no choices.")
    message, usage = _dict(choice.get("message")), _dict(body.get("usage"))
    thinking = reasoning(message)
    text = message.get("content")
    text = text if isinstance(text, str) else ""
    if not thinking:  # no reasoning parser on the server: the thinking is inline
        thinking, text = split_inline(text)
    return Completion(text=text.strip(), thinking=thinking.strip(),
                      finish_reason=str(choice.get("finish_reason") or Status.STOP),
                      prompt_tokens=_count(usage.get("prompt_tokens")),
                      output_tokens=_count(usage.get("completion_tokens")),
                      thinking_tokens=reasoning_tokens(usage))


def split_inline(content: str) -> tuple[str, str]:
    """(thinking, answer) of a whole content that may open with ``<think>...</think>``."""
    split = ThinkSplitter()
    parts = [*split.feed(content), *split.flush()]
    return ("".join(part for part in parts if isinstance(part, Thinking)),
            "".join(part for part in parts if not isinstance(part, Thinking)))


def reasoning(message: Any) -> str:
    """The reasoning of a message or a streamed delta: ``reasoning`` or ``reasoning_content``
    (between 0.11.2 and 0.15 both, the old one sometimes null)."""
    if not isinstance(message, dict):
        return ""
    value = message.get("reasoning") or message.get("reasoning_content")
    return value if isinstance(value, str) else ""


def reasoning_tokens(usage: Any) -> int | None:
    """``usage.completion_tokens_details.reasoning_tokens`` (vLLM with a reasoning parser)."""
    return _count(_dict(_dict(usage).get("completion_tokens_details")).get("reasoning_tokens"))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
