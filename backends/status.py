"""How a run ends or stands: one vocabulary, defined once, for every layer.

A stream's stop reason (``GenerationStats.done_reason``), a run's status (live or in the
history), a Batch row's and an earlier batch's are members of one ``StrEnum``: each value is
written here only, and stored values and files keep their strings ("finished", "length").
The backends need the stop reasons, so it lives here; the app imports it.
"""

from __future__ import annotations

from enum import StrEnum, unique


@unique  # no value listed twice: a second name for one would be an alias, refused here
class Status(StrEnum):
    # A stream's stop reason: "stop" and "length" are the servers' own words, the rest ours.
    STOP = "stop"
    LENGTH = "length"  # cut at max tokens: a stop reason and a run's status
    CANCELLED = "cancelled"
    ERROR = "error"  # a stop reason and a run's status
    REPETITION = "repetition"  # the answer's tail was looping: a stop reason and a status
    # A run's status (besides length, error, repetition).
    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"  # only in the history: its process died while it ran
    # A Batch row's, before and between its runs.
    PENDING = "pending"
    RETRYING = "retrying"
    FAILED = "failed"  # every attempt failed
    # An earlier batch's (besides running, interrupted, stopped): every row answered; every
    # row ran, some failed.
    COMPLETE = "complete"
    ENDED = "ended"

    @classmethod
    def of_answer(cls, done_reason: str | None) -> Status:
        """An answered run's status from its stream's stop reason: cut at max tokens, cut
        by the repetition guard, or finished."""
        return cls(done_reason) if done_reason in (cls.LENGTH, cls.REPETITION) \
            else cls.FINISHED
