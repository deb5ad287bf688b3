"""Reasoning models: their thinking, kept apart from the answer.

Servers with a reasoning parser send the thinking in a field of its own (Ollama
``message.thinking``, vLLM ``reasoning`` / ``reasoning_content``): a backend yields it as a
``Thinking`` fragment. Servers without one (llama.cpp, vLLM without ``--reasoning-parser``, a
GGUF in the embedded backend, Ollama before it parsed thinking) leave it inline, as
``<think>...</think>`` at the start of the content, a tag possibly split across two
fragments: ``ThinkSplitter`` takes it out.
"""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


class Thinking(str):
    """A fragment of the model's thinking (not of its answer)."""


class ThinkSplitter:
    """Splits streamed content into thinking and answer parts.

    Only a ``<think>`` that opens the content (after whitespace) starts thinking: a model
    that writes the tag later, in its answer, is quoting it. Text that might be the start of
    a tag is held back until the next fragment says.
    """

    def __init__(self) -> None:
        self._state = "start"  # start | thinking | answer
        self._pending = ""
        self._answer_begun = False

    def feed(self, fragment: str) -> list[str]:
        """The parts of ``fragment`` (with what was held back), in order: ``Thinking`` for
        thinking, plain ``str`` for answer text."""
        text = self._pending + fragment
        self._pending = ""
        parts: list[str] = []
        if self._state == "start":
            stripped = text.lstrip()
            if stripped.startswith(OPEN):
                self._state, text = "thinking", stripped[len(OPEN):]
            elif OPEN.startswith(stripped):  # empty, or a tag still arriving: wait
                self._pending = text
                return parts
            else:
                self._state = "answer"
        if self._state == "thinking":
            end = text.find(CLOSE)
            if end < 0:
                keep = _partial_suffix(text, CLOSE)
                self._pending = text[len(text) - keep:] if keep else ""
                thought = text[:len(text) - keep]
                return [Thinking(thought)] if thought else parts
            if end:
                parts.append(Thinking(text[:end]))
            self._state, text = "answer", text[end + len(CLOSE):]
        if not self._answer_begun:  # the blank lines after </think> are no part of the answer
            text = text.lstrip()
            self._answer_begun = bool(text)
        if text:
            parts.append(text)
        return parts

    def flush(self) -> list[str]:
        """What was held back when the content ends (an unclosed thinking stays thinking)."""
        text, self._pending = self._pending, ""
        if not text:
            return []
        if self._state == "thinking":
            return [Thinking(text)]
        return [text] if text.strip() or self._answer_begun else []


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
