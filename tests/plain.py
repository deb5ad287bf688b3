"""What a message drawn with ``studio.records.render.literal`` shows: its markdown source with the
backslash escapes resolved. AppTest reads an element's markdown source, so tests compare
messages that hold names, hosts or error texts through ``plain``."""

from __future__ import annotations

import re

_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def plain(markdown: str) -> str:
    """``markdown`` with every backslash escape of ASCII punctuation resolved."""
    return _ESCAPE.sub(r"\1", markdown)
