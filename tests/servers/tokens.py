"""The test servers' tokenizer: deterministic, dependency-free, and close enough to a real
BPE tokenizer (Llama 3's, roughly) that prompt lengths and context windows behave plausibly.

Rules, in order, over the text:
- a run of whitespace that holds a newline is a token of its own, up to its last newline;
- other whitespace sticks to the front of the token that follows (``" solar"``);
- a word of up to 8 letters is one token; a longer one is cut into pieces of at most 5 letters;
- a number is cut into groups of at most 3 digits, from the left (``19,622`` = 3 tokens);
- any other character is one token, except that a run of the same one (``##``, ``**``,
  ``---``) makes a token of up to 3;
- whitespace at the very end is a token.

The tokens join back to exactly the text. On the app's 30 PV presets (user prompts and
system prompts) this gives about 3.5 characters per token (tests/test_fake_servers.py
measures it; SmolLM2's real tokenizer gives 3.1 on the same text, since it spells out every
digit).

A chat prompt counts its messages' tokens plus 5 template tokens per message and a BOS.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

WHOLE_WORD = 8  # letters: a word up to this long is one token
WORD_PIECE = 5  # letters per piece of a longer word
DIGITS = 3  # digits per token
TEMPLATE_TOKENS = 5  # per chat message: role header and end-of-turn markers
BOS_TOKENS = 1
VOCAB_SIZE = 49152  # SmolLM2's, for plausible-looking token ids
SPECIAL_IDS = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}  # as in SmolLM2

_PIECE = re.compile(r"(\s*)(?:([^\W\d_]+)|(\d+)|((\S)\5{0,2}))|(\s+)")


def split_tokens(text: str) -> list[str]:
    """The text's tokens, as strings that join back to exactly ``text``."""
    tokens: list[str] = []
    for match in _PIECE.finditer(text):
        space, word, number, other, _, tail = match.groups()
        if tail is not None:
            tokens.append(tail)
            continue
        if "\n" in space:
            cut = space.rindex("\n") + 1
            tokens.append(space[:cut])
            space = space[cut:]
        if word is not None:
            body, size = word, (len(word) if len(word) <= WHOLE_WORD else WORD_PIECE)
        elif number is not None:
            body, size = number, DIGITS
        else:
            body, size = other, len(other)
        pieces = [body[i:i + size] for i in range(0, len(body), size)]
        pieces[0] = space + pieces[0]
        tokens.extend(pieces)
    return tokens


def count_tokens(text: str) -> int:
    """How many tokens ``text`` is."""
    return len(split_tokens(text))


def _content(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: count the text ones
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """A chat prompt's length: each message's content, 5 template tokens per message, a BOS."""
    return BOS_TOKENS + sum(count_tokens(_content(m)) + TEMPLATE_TOKENS for m in messages)


def chat_messages(prompt: str, system: str = "") -> list[dict[str, str]]:
    """The messages a client sends: an optional system message, then the user's prompt."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return messages


def token_id(token: str) -> int:
    """A stable fake id for a token string (the special tokens have SmolLM2's ids)."""
    if token in SPECIAL_IDS:
        return SPECIAL_IDS[token]
    return len(SPECIAL_IDS) + zlib.crc32(token.encode()) % (VOCAB_SIZE - len(SPECIAL_IDS))


def byte_level(token: str) -> str:
    """A token as a GPT-2 style byte-level tokenizer spells it (space Ġ, newline Ċ)."""
    return token.replace(" ", "\u0120").replace("\n", "\u010a").replace("\t", "\u0109")
