"""The vocabulary of a run, defined once: what it is asked for and what came of it.

``RunParams`` is what the sidebar (or a Compare pane) picks; ``RunRequest`` adds the prompts;
``Outcome`` is what a run produced (status, answer, thinking, error, statistics and marks),
the one shape a live run, a stored run, a Batch row and an imported row share. The Batch
definition and the stored run are built from these (``studio.runs.batch.BatchSpec``,
``studio.records.store.StoredRun``), so a field is named in one place. The statuses are
``backends.status.Status``. Everything imports this leaf module; it imports nothing of the app
but the backends' capabilities.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum, unique
from functools import cached_property
from typing import Any, Self

from backends import BACKENDS, DEFAULT_SAMPLING, Backend, Sampling, backend_class, delivery
from backends.base import DELIVERY_ONE_PIECE, THINK_OFF
from backends.status import Status
from backends.stream import GenerationStats
from studio.pv.location import Location

WHOLE = "whole"  # a field's metadata: the serializer keeps its value whole (one column)
# A looping answer is cut, but what it said stands.
ANSWERED = (Status.FINISHED, Status.LENGTH, Status.REPETITION)
FINAL_STATUSES = (*ANSWERED, Status.STOPPED, Status.ERROR)  # how a run the app ran ended
# The words a page shows for a status: its value capitalised, but for these.
_WORDS: dict[str, str] = {Status.LENGTH: "Hit max tokens", Status.PENDING: "Waiting"}


def status_label(status: str) -> str:
    """The words every page and table shows for a status (the statistics' "Stop reason", a
    Batch row's "Waiting"); files keep the machine value."""
    return _WORDS.get(status, status.capitalize())


# Marks beside a run's status: what went wrong around the answer without ending it.
PROMPT_TRUNCATED = "prompt truncated by the server"
COLD_START = "cold start"  # the server loaded the model for this run
# Recorded from a batch runner's results file (the Batch page's import), not run by the app:
# the statistics name the runner ("imported from vLLM run_batch").
IMPORTED, IMPORTED_FROM = "imported", "imported_from"


def run_notes(stats: Mapping[str, Any]) -> list[str]:
    """The marks of a run, from its statistics (live or stored): imported from a batch
    runner, a prompt the server cut, a cold start. Every page and export shows these same
    words."""
    marks = ((PROMPT_TRUNCATED, "prompt_truncated"), (COLD_START, "cold_start"))
    imported = [f"{IMPORTED} from {stats[IMPORTED_FROM]}"] if stats.get(IMPORTED_FROM) else []
    return imported + [note for note, key in marks if stats.get(key)]


def no_thinking_note(think: str, thinking: str, status: str) -> str | None:
    """What to say when Think asked for thinking and an answer came back without any (a
    model that does not think takes the setting silently); None otherwise."""
    if think in ("", THINK_OFF) or status not in ANSWERED or thinking.strip():
        return None
    return (f"Think was set to {think}, but no thinking came back: the model answered "
            "without thinking (it may not be a reasoning model, or its chat template ignores "
            "the setting).")


@unique
class AnswerFormat(StrEnum):
    """How the answer is asked for: the markdown report (the seed's), or structured: a JSON
    object the server's constrained decoding holds to the report's schema
    (``studio.pv.structured``), shown as the same report."""

    MARKDOWN = "markdown"
    STRUCTURED = "structured"

    @property
    def label(self) -> str:
        return {AnswerFormat.MARKDOWN: "Markdown report",
                AnswerFormat.STRUCTURED: "Structured (JSON schema)"}[self]


@dataclass(frozen=True)
class RunParams:
    """Where a run goes and how it samples: what the analyst picks in the sidebar or a
    Compare pane."""

    backend: str  # a kind of backends.BACKENDS: ollama | vllm | embedded
    host: str
    model: str
    sampling: Sampling = DEFAULT_SAMPLING  # max tokens, temperature, repeat penalty, Think
    sse: bool = False  # a one-piece backend asked to stream (server-sent events)
    answer_format: AnswerFormat = AnswerFormat.MARKDOWN  # runs before it existed: markdown

    @property
    def structured(self) -> bool:
        return self.answer_format == AnswerFormat.STRUCTURED

    def params(self) -> RunParams:
        """Just the parameters (of a request, a batch definition, a stored run)."""
        return RunParams(**self.param_fields())

    def param_fields(self) -> dict[str, Any]:
        """The parameters by name, as they are (``asdict`` would take ``sampling`` apart)."""
        return {f.name: getattr(self, f.name) for f in fields(RunParams)}

    def with_sampling(self, **changes: Any) -> Self:
        """This one with some sampling settings changed (``max_tokens=0``, say)."""
        return replace(self, sampling=replace(self.sampling, **changes))

    @property
    def backend_class(self) -> type[Backend]:
        return backend_class(self.backend)

    @property
    def delivery(self) -> str:
        """'stream', 'stream (SSE)' or 'one piece' (a kind no backend has: one piece)."""
        known = BACKENDS.get(self.backend)
        return delivery(known, self.sse) if known else DELIVERY_ONE_PIECE

    @property
    def label(self) -> str:
        """'Ollama · llama3.1:8b'."""
        known = BACKENDS.get(self.backend)
        return f"{known.label if known else self.backend} · {self.model}"


def flat_dict(params: RunParams) -> dict[str, Any]:
    """Every field by name, the sampling settings beside the others (as in the files and
    reports written before ``Sampling``): a batch definition, a Compare report's panes."""
    data = asdict(params)
    data.update(data.pop("sampling"))
    return data


@dataclass(frozen=True, kw_only=True)
class RunRequest(RunParams):
    """Everything that defines a run: its parameters and its prompts."""

    system: str
    prompt: str
    preset: str = ""  # the preset the prompt came from, "custom", or "" for none
    # The row the prompt's DATA CONTEXT was built from (a preset or an uploaded CSV's): what
    # the figure check grades the answer against. Kept whole: one column, not one per field.
    location: Location | None = field(default=None, metadata={WHOLE: True})


@dataclass(frozen=True)
class Outcome:
    """What a run produced, or has so far: how it stands, its answer and a reasoning model's
    thinking, its error, and its statistics as recorded (``GenerationStats``' figures and the
    marks it has no field for: ``imported_from``). A live run's grows (``Run.outcome``); the
    history keeps one per run; a Batch row and an imported row hold one."""

    status: Status = Status.RUNNING
    text: str = ""  # the answer, whole or partial
    thinking: str = ""
    error: str | None = None
    statistics: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def stats(self) -> GenerationStats:
        """The statistics' figures, as the live run had them."""
        return GenerationStats.from_dict(self.statistics)

    @property
    def notes(self) -> list[str]:
        """The marks beside its status (imported, a prompt the server cut, a cold start)."""
        return run_notes(self.statistics)

    @property
    def answered(self) -> bool:
        return self.status in ANSWERED


class HoldsOutcome:
    """A holder of a run's ``Outcome`` (a stored run, a Batch row, an imported row): its
    answer and thinking are the outcome's."""

    outcome: Outcome

    @property
    def text(self) -> str:
        """The answer, whole or partial."""
        return self.outcome.text

    @property
    def thinking(self) -> str:
        """A reasoning model's thinking, apart from the answer."""
        return self.outcome.thinking
