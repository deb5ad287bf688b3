"""Spotting an answer that loops: the same line, or the same block, over and over.

Small models at low temperature can fall into a loop ("- Monthly load: 2.24 kW/m²" a thousand
times) that runs until the token limit. A run whose tail repeats is stopped early, its text
kept, and reported with stop reason ``repetition``. The check looks only at the tail, so it is
cheap enough to run as the text grows.

It is policy, not transport: the runner (``studio.runs.runner``) applies it once to every
backend's answer, a stream (``guard_stream``) or one piece (``mark_looping``).
"""

from __future__ import annotations

from .status import Status
from .stream import GenerationStats, TokenStream

MIN_REPEATS = 4  # the same unit four times running
MIN_INLINE_SPAN = 200  # a unit inside one line must fill this many characters to count
MIN_CONTENT = 3  # a unit needs this many non-space characters ("\n\n\n\n" is no loop)
MAX_UNIT = 1500  # longest repeating block looked for, in characters
# The most of an answer's end a check reads: the longest unit, repeated, with room to spare.
# A check costs the same at the 100th token and the 20,000th.
TAIL = MAX_UNIT * (MIN_REPEATS + 1)
_ANCHOR = 12  # the tail's last characters, searched for earlier to find candidate periods
_MAX_CANDIDATES = 12


def repeating_unit(text: str) -> str | None:
    """The unit the text's tail repeats, when it repeats at least ``MIN_REPEATS`` times
    running: a whole line or block of lines, or a phrase looping within a line that spans
    ``MIN_INLINE_SPAN`` characters. None when the tail does not loop.

    Markdown's own repetition (a table's ``|---|---|`` rule, a list of different items)
    is too short or not identical, so it does not count.
    """
    end = len(text)
    if end < MIN_REPEATS * 2:
        return None
    anchor = text[-_ANCHOR:]
    search_end = end - 1
    for _ in range(_MAX_CANDIDATES):
        # An earlier copy of the tail's anchor ending at ``found + len(anchor)`` means a
        # candidate period of that distance.
        found = text.rfind(anchor, max(0, end - MAX_UNIT - len(anchor)), search_end)
        if found < 0:
            return None
        period = end - (found + len(anchor))
        search_end = found + len(anchor) - 1
        if period <= 0:
            continue
        unit = text[end - period:]
        repeats = _copies(text, unit)
        if repeats >= MIN_REPEATS and _is_loop(unit, repeats):
            return unit
    return None


def _copies(text: str, unit: str) -> int:
    """How many copies of ``unit`` end the text, back to back."""
    period, end, count = len(unit), len(text), 1
    while end - (count + 1) * period >= 0 and \
            text[end - (count + 1) * period:end - count * period] == unit:
        count += 1
    return count


def _is_loop(unit: str, repeats: int) -> bool:
    if len(unit.replace(" ", "").replace("\n", "").replace("\t", "")) < MIN_CONTENT:
        return False
    return "\n" in unit or len(unit) * repeats >= MIN_INLINE_SPAN


class RepetitionGuard:
    """Fed each fragment of a growing answer; checks now and then whether it loops: after a
    new line, or every ``every`` characters (a loop inside one line has no newline to wait
    for). It keeps only the answer's tail, so a check costs the same at any length."""

    def __init__(self, every: int = 64) -> None:
        self.every = every
        self._tail = ""
        self._unchecked = 0

    def feed(self, fragment: str) -> bool:
        """Add a fragment; True when the answer now ends in a loop."""
        self._tail += fragment
        if len(self._tail) > 2 * TAIL:  # trimmed now and then: appends stay cheap
            self._tail = self._tail[-TAIL:]
        self._unchecked += len(fragment)
        if "\n" not in fragment and self._unchecked < self.every:
            return False
        self._unchecked = 0
        return repeating_unit(self._tail[-TAIL:]) is not None


def guard_stream(stream: TokenStream) -> TokenStream:
    """``stream``, ended once its answer's tail loops: after that fragment the server is told
    to stop (as on a close), the text is kept, and the done reason is ``repetition``."""
    return stream.stop_when(RepetitionGuard().feed, Status.REPETITION)


def mark_looping(text: str, stats: GenerationStats) -> None:
    """A whole answer (one piece) that looped to its end: its done reason is ``repetition``."""
    if repeating_unit(text) is not None:
        stats.done_reason = Status.REPETITION
