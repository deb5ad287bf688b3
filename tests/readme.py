"""The README's code, read from README.md so that a test runs what the README prints.

``fenced_blocks()`` are the ```` ``` ```` blocks (dedented, as a reader copies them),
``inline_commands()`` the inline code spans that are commands (``make run``, ...).
``block(language, needle)`` is the one block of that language that holds ``needle``: tests take
their code through it, and tests/test_readme.py checks that every block is taken by a named
test or marked in the README as not run by the test suite (``UNTESTED``, said in the block's
own paragraph or the one right before it).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
UNTESTED = "not run by the test suite"
# Inline spans that are commands a reader types (a span needs a space: `make run`, not `make`).
COMMAND_START = re.compile(r"(make|python\S*|\.venv/\S+|streamlit|pip|curl|split|cat|vllm|"
                           r"ollama|proxy_pass|apt-get|docker|git)\s")

_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # of the opening fence, 1-based
    before: str  # the paragraph right before the fence (its lead-in)


@dataclass(frozen=True)
class Span:
    code: str
    line: int
    paragraph: str


def _lines() -> list[str]:
    return README.read_text(encoding="utf-8").splitlines()


def _paragraph_before(lines: list[str], index: int) -> str:
    """The non-blank lines right above ``lines[index]`` (blank lines just above skipped)."""
    end = index
    while end > 0 and not lines[end - 1].strip():
        end -= 1
    start = end
    while start > 0 and lines[start - 1].strip() and not _FENCE.match(lines[start - 1]):
        start -= 1
    return " ".join(line.strip() for line in lines[start:end])


def fenced_blocks() -> list[Block]:
    lines = _lines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = index + 1
        while not re.match(r"^\s*```\s*$", lines[end]):
            end += 1
        code = textwrap.dedent("\n".join(lines[index + 1:end])) + "\n"
        blocks.append(Block(opening.group(2), code, index + 1,
                            _paragraph_before(lines, index)))
        index = end + 1
    return blocks


def _prose() -> list[tuple[int, str]]:
    """The README's lines outside fenced blocks, numbered from 1."""
    prose: list[tuple[int, str]] = []
    inside = False
    for number, line in enumerate(_lines(), start=1):
        if _FENCE.match(line) or (inside and re.match(r"^\s*```\s*$", line)):
            inside = not inside
            continue
        if not inside:
            prose.append((number, line))
    return prose


def inline_commands() -> list[Span]:
    """Every inline code span of the prose that is a command, with its paragraph."""
    paragraphs: list[list[tuple[int, str]]] = [[]]
    for number, line in _prose():
        if line.strip():
            paragraphs[-1].append((number, line))
        elif paragraphs[-1]:
            paragraphs.append([])
    spans: list[Span] = []
    for paragraph in paragraphs:
        text = " ".join(line.strip() for _, line in paragraph)
        for code in re.findall(r"`([^`]+)`", text):
            if COMMAND_START.match(code + " ") and " " in code.strip():
                spans.append(Span(code, paragraph[0][0], text))
    return spans


def block(language: str, needle: str) -> Block:
    """The one README block in ``language`` whose code holds ``needle``."""
    found = [b for b in fenced_blocks() if b.language == language and needle in b.code]
    assert len(found) == 1, f"README.md: {len(found)} {language or 'plain'} blocks hold {needle!r}"
    return found[0]


def command(start: str) -> str:
    """The one inline command of the README that starts with ``start``."""
    found = {span.code for span in inline_commands() if span.code.startswith(start)}
    assert len(found) == 1, f"README.md: inline commands starting {start!r}: {sorted(found)}"
    return found.pop()
