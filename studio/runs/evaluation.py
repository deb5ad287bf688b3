"""Evaluate: two to four backend and model choices over the whole batch of locations.

An evaluation runs every location (a *row*) on every *choice* (a backend, host, model and
sampling settings, with a concurrency of its own): one cell per pair. Each choice's cells are a
``studio.runs.batch.Batch``, so a cell is recorded as it runs, retried on a passing failure,
and never run twice: the whole evaluation is one history group, and a stopped or killed one
resumes with its answered cells kept. A cell's history position is ``choice * rows + row``.

Scheduling (``schedule``): choices on different servers run at the same time. Choices on one
server run one after the other, in their order: two models on one Ollama would make it load
them back and forth (each switch a cold start), and even one model's runs would slow the
other choice's figures. The cold starts each choice met are counted in the scorecard.

The scorecard (``Scorecard``) puts the choices side by side: how the runs ended, the figure
check and grounding (``studio.pv.checks``), the valid structured answers, the cold starts and
the serving figures as ``vllm bench serve`` computes them (``studio.runs.serving``), with the
best value of each row marked. The matrix (``matrix_rows``) has a line per location.
"""

from __future__ import annotations

import html
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any

from backends import Backend, backend_class
from backends.base import DELIVERY_ONE_PIECE
from backends.errors import BackendError
from backends.http import redact, scrub
from backends.sampling import Sampling
from backends.status import Status
from studio.pv.checks import (
    CHECK_COLUMNS,
    CHECK_DEFINITIONS,
    AnswerCheck,
    check_dict,
    check_html,
)
from studio.pv.location import Location
from studio.pv.prompt import STATIC_FIRST
from studio.pv.structured import shown_text, valid_share
from studio.records.render import markdown_to_safe_html, report_page, thinking_html
from studio.records.report import (
    Column,
    definitions_html,
    digest_text,
    parameters_html,
    prompt_html,
    prompts_html,
    table_html,
)
from studio.records.spreadsheet import csv_text
from studio.records.store import GroupSummary, RunStore, StoredRun
from studio.runs.batch import MAX_CONCURRENCY, Batch, BatchRow, BatchSpec, group_state
from studio.runs.capacity import Capacity
from studio.runs.compare import pane_labels
from studio.runs.connection import ProbeCache
from studio.runs.job import Job, LiveJobs
from studio.runs.request import ANSWERED, AnswerFormat, RunParams, flat_dict, status_label
from studio.runs.runner import Recording
from studio.runs.serving import (
    DEFAULT_PERCENTILES,
    DEFINITIONS,
    RequestTiming,
    ServiceLevels,
    ServingMetrics,
    percentile_word,
    request_timing,
    serving_metrics,
)
from studio.votes.ballot import LETTERS, Ballot, Contender

MIN_CHOICES, MAX_CHOICES = 2, 4
KIND = "evaluation"  # its history group's kind
PAGE = "evaluate"  # the page its runs are recorded from
DEFAULT_LEVELS = ServiceLevels(ttft_ms=10_000, e2el_ms=120_000)  # the page's starting SLOs
ONE_PIECE = "– (one piece)"  # a latency an answer delivered whole does not have
STAR = "★"  # marks the best value of a scorecard row, and a location's best choice



@dataclass(frozen=True, kw_only=True)
class Choice(RunParams):
    """One column of an evaluation: where its runs go, how they sample, and how many of
    them are in flight at once."""

    concurrency: int = 1

    @classmethod
    def of(cls, params: RunParams, concurrency: int = 1) -> Choice:
        return cls(**params.param_fields(),
                   concurrency=max(1, min(int(concurrency), MAX_CONCURRENCY)))


@dataclass(frozen=True, kw_only=True)
class EvaluationSpec:
    """What an evaluation is: its choices, the locations, the system prompt and layout, and
    the service levels its goodput is measured against. Kept with its history group."""

    choices: tuple[Choice, ...]
    scenarios: list[Location]
    system: str
    layout: str = STATIC_FIRST
    levels: ServiceLevels = DEFAULT_LEVELS

    def __post_init__(self) -> None:
        if not MIN_CHOICES <= len(self.choices) <= MAX_CHOICES:
            raise ValueError(f"An evaluation compares {MIN_CHOICES} to {MAX_CHOICES} choices, "
                             f"not {len(self.choices)}.")

    @property
    def labels(self) -> list[str]:
        """'1. Ollama · llama3.1:8b', numbered; where two would read the same, what differs
        (the host, then the settings: 'max tokens 32', 'temperature 0.7', ...)."""
        return choice_labels(self.choices)

    @property
    def rows(self) -> int:
        return len(self.scenarios)

    @property
    def cells(self) -> int:
        return len(self.choices) * len(self.scenarios)

    def batch_spec(self, choice: int) -> BatchSpec:
        """The choice's cells as a batch definition."""
        params = self.choices[choice]
        return BatchSpec(**params.param_fields(), scenarios=self.scenarios, system=self.system,
                         concurrency=params.concurrency, layout=self.layout)

    def position(self, choice: int, row: int) -> int:
        """The cell's position in the history group."""
        return choice * self.rows + row

    def cell_of(self, position: int) -> tuple[int, int]:
        """The (choice, row) at a history position."""
        return divmod(position, self.rows) if self.rows else (0, 0)

    def to_json(self) -> str:
        """The definition as stored with its history group; hosts without credentials
        (``with_hosts`` puts them back on resume)."""
        return json.dumps({
            "choices": [{**flat_dict(choice), "host": redact(choice.host)}
                        for choice in self.choices],
            "scenarios": [asdict(location) for location in self.scenarios],
            "system": self.system, "layout": self.layout, "levels": asdict(self.levels)})

    @classmethod
    def from_json(cls, text: str) -> EvaluationSpec:
        data = json.loads(text)
        known = {f.name for f in fields(Choice)}
        choices = tuple(Choice(**{
            **{key: value for key, value in choice.items() if key in known},
            "sampling": Sampling.from_dict(choice),
            "answer_format": AnswerFormat(choice.get("answer_format") or AnswerFormat.MARKDOWN)})
            for choice in data["choices"])
        return cls(choices=choices, scenarios=[Location(**row) for row in data["scenarios"]],
                   system=data["system"], layout=data.get("layout", STATIC_FIRST),
                   levels=ServiceLevels(**data.get("levels", {})))

    def with_hosts(self, hosts: Iterable[str]) -> EvaluationSpec:
        """This definition with each choice's host as one of ``hosts`` that is the same
        server (credentials aside): a stored one resumed with the credentials config holds."""
        known = {redact(host): host for host in hosts if host}
        return replace(self, choices=tuple(replace(choice, host=known.get(
            redact(choice.host), choice.host)) for choice in self.choices))


# The settings that tell two choices of one model apart, in the words of the page.
_SETTING_WORDS: tuple[tuple[str, Callable[[Choice], Any]], ...] = (
    ("max tokens", lambda choice: choice.sampling.max_tokens),
    ("temperature", lambda choice: choice.sampling.temperature),
    ("repeat penalty", lambda choice: choice.sampling.repeat_penalty),
    ("think", lambda choice: choice.sampling.think or "server default"),
    ("", lambda choice: choice.answer_format.label),
    ("", lambda choice: choice.delivery),
    ("concurrency", lambda choice: choice.concurrency),
)


def choice_labels(choices: Sequence[Choice]) -> list[str]:
    """Each choice's label (``pane_labels``), with the settings in which it differs from a
    choice that would read the same: the same model twice with another temperature is told
    apart in every column header."""
    labels = pane_labels(list(choices))
    names = [label.split(". ", 1)[1] for label in labels]
    result = []
    for index, (label, name) in enumerate(zip(labels, names, strict=True)):
        twins = [choices[other] for other, twin in enumerate(names)
                 if twin == name and other != index]
        differs = [f"{word} {value}".strip() for word, value_of in _SETTING_WORDS
                   if twins and any(value_of(twin) != (value := value_of(choices[index]))
                                    for twin in twins)]
        result.append(" · ".join([label, *differs]))
    return result


# -- scheduling ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Lane:
    """Choices that share a server, run one after the other (one choice: on its own)."""

    choices: tuple[int, ...]
    server: str  # 'Ollama at http://127.0.0.1:11434' (no credentials)
    reason: str = ""  # why they take turns ('' for one choice)
    # Its choices hold more than one model on a server that loads them on demand and may
    # unload one for another (Ollama): at the same time, they could reload at every switch.
    reloads: bool = False


def server_of(choice: RunParams) -> tuple[str, str]:
    """What makes two choices share a server: the backend and its host (a backend that runs
    in this process, the embedded one, has one: this process, whatever its host says)."""
    if not backend_class(choice.backend).default_host:
        return choice.backend, ""
    return choice.backend, redact(choice.host)


def schedule(choices: Sequence[RunParams]) -> list[Lane]:
    """The lanes that run at the same time: a lane per server, its choices in order."""
    lanes: dict[tuple[str, str], list[int]] = {}
    for index, choice in enumerate(choices):
        lanes.setdefault(server_of(choice), []).append(index)
    result = []
    for (kind, host), members in lanes.items():
        label = backend_class(kind).label
        server = f"{label} at {host}" if host else label
        reason, reloads = "", False
        if len(members) > 1:
            models = {choices[index].model for index in members}
            if not backend_class(kind).default_host:
                # The embedded backend keeps every model it loaded (backends.shared): no
                # reload back and forth, but one process's CPU cores for both.
                reason = ("they run in this app's process, on the same CPU cores: at the same "
                          "time each would slow the other's figures, so they take turns")
            elif backend_class(kind).loads_models_on_demand and len(models) > 1:
                reloads = True
                reason = (f"{len(models)} models on one {label} would make it load them back "
                          "and forth, a cold start at each switch; one after the other, each "
                          "model loads once")
            else:
                reason = ("one server: a choice's requests would slow the other's figures, so "
                          "they take turns")
        result.append(Lane(tuple(members), server, reason, reloads))
    return result


def lane_kind(lane: Lane, spec: EvaluationSpec) -> str:
    """The backend kind of a lane's choices (one server: one kind)."""
    return spec.choices[lane.choices[0]].backend


def schedule_lines(spec: EvaluationSpec) -> list[str]:
    """How the choices will run, in words (plain text: hosts are a user's)."""
    lanes = schedule(spec.choices)
    numbers = [", ".join(str(index + 1) for index in lane.choices) for lane in lanes]
    lines = []
    for lane, named in zip(lanes, numbers, strict=True):
        if len(lane.choices) > 1:
            lines.append(f"Choices {named} ({lane.server}) run one after the other: "
                         f"{lane.reason}.")
        else:
            where = ("in this app's process" if not backend_class(
                lane_kind(lane, spec)).default_host else "on its own server")
            lines.append(f"Choice {named} ({lane.server}) runs {where}"
                         + (", at the same time as the others." if len(lanes) > 1 else "."))
    return lines


# -- the job -------------------------------------------------------------------------------
def _built(build: Callable[[Choice], Backend], choice: Choice) -> Backend:
    """The choice's backend. Whatever stops ``build`` is a ``BackendError`` (its text without
    the host's credentials): the Batch then fails every cell of the choice with it, and the
    other choices run on."""
    try:
        return build(choice)
    except BackendError:
        raise
    except Exception as exc:  # a config or a model path the builder cannot use
        raise BackendError(f"Cannot set up {choice.label}: {type(exc).__name__}: "
                           f"{scrub(str(exc), choice.host)}", backend=choice.backend,
                           host=redact(choice.host)) from exc


class Evaluation(Job):
    """``Evaluation(spec, build=...).start()``; poll ``choice_progress``; ``stop()``."""

    name = "evaluation"

    def __init__(self, spec: EvaluationSpec, *, build: Callable[[Choice], Backend],
                 recording: Callable[[int], Recording | None] | None = None,
                 finished_before: Mapping[int, StoredRun] | None = None,
                 attempts_before: Mapping[int, int] | None = None, max_retries: int = 2,
                 backoff_s: float = 1.0, group_id: int | None = None,
                 on_end: Callable[[], None] | None = None, capacity: Capacity | None = None,
                 probes: ProbeCache | None = None) -> None:
        """As ``Batch``'s, by history position: ``recording(position)``, the positions
        answered in an earlier session (``finished_before``) and the attempts made at
        each. ``build(choice)`` makes the choice's backend, on its lane's thread."""
        super().__init__()
        self.spec, self.group_id = spec, group_id
        self.lanes = schedule(spec.choices)
        finished, attempts = finished_before or {}, attempts_before or {}
        self.batches: list[Batch] = []
        for index, choice in enumerate(spec.choices):
            def recorded(row: int, index: int = index) -> Recording | None:
                return recording(spec.position(index, row)) if recording else None

            mine = range(spec.position(index, 0), spec.position(index + 1, 0))
            self.batches.append(Batch(
                spec.batch_spec(index), build=partial(_built, build, choice), recording=recorded,
                finished_before={spec.cell_of(p)[1]: run for p, run in finished.items()
                                 if p in mine},
                attempts_before={spec.cell_of(p)[1]: n for p, n in attempts.items()
                                 if p in mine},
                max_retries=max_retries, backoff_s=backoff_s, capacity=capacity,
                probes=probes))
        self._on_end = on_end
        self.started: float | None = None
        self.ended: float | None = None
        self.reopened = False  # shown from the history, not run by this session

    @property
    def labels(self) -> list[str]:
        return self.spec.labels

    def start(self) -> Evaluation:
        self.started = time.monotonic()
        super().start()
        return self

    def _work(self) -> None:
        threads = [threading.Thread(target=self._run_lane, args=(lane,), daemon=True,
                                    name=f"evaluation-lane-{number}")
                   for number, lane in enumerate(self.lanes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _run_lane(self, lane: Lane) -> None:
        for index in lane.choices:
            if self._stop.is_set():
                return
            batch = self.batches[index]
            batch.start()
            if self._stop.is_set():  # Stop came while it was starting
                batch.stop()
            batch.wait()

    def _cancel(self) -> None:
        for batch in self.batches:
            batch.stop()

    def _finished(self) -> None:
        self.ended = time.monotonic()
        if self._on_end is not None:
            self._on_end()

    # -- progress ----------------------------------------------------------------------------
    def cells(self, choice: int) -> list[BatchRow]:
        return self.batches[choice].rows

    def _ahead(self, choice: int) -> list[int]:
        """The choices of its lane that run before it and have not ended (in their order),
        while it has not started in a running evaluation."""
        if self.started is None or self.reopened or self.done \
                or self.batches[choice].started is not None:
            return []
        lane = next(lane for lane in self.lanes if choice in lane.choices)
        return [other for other in lane.choices[:lane.choices.index(choice)]
                if not self.batches[other].done]

    def waits_for(self, choice: int) -> int | None:
        """The choice of its lane it waits for (the last still to end before it), if it has
        not started."""
        ahead = self._ahead(choice)
        return ahead[-1] if ahead else None

    def starts_in(self, choice: int) -> float | None:
        """About how many seconds until a waiting choice starts: the time left of the one
        running ahead of it, when that is the only one still to end and its pace is known
        (one still to start has no pace yet); None otherwise."""
        ahead = self._ahead(choice)
        if len(ahead) != 1:
            return None
        eta = self.batches[ahead[0]].progress()["eta_s"]
        return float(eta) if eta else None

    def choice_progress(self, choice: int) -> tuple[float, str]:
        """The choice's progress bar: its fraction, and its line ('12 done · 0 failed · 4
        running · 14 waiting · about 40 s left', or what it waits for)."""
        batch = self.batches[choice]
        figures = batch.progress()
        ahead = self._ahead(choice)
        if ahead:
            named = " and ".join(str(other + 1) for other in ahead)
            start = self.starts_in(choice)
            after = f", starts in about {start:.0f} s" if start else ""
            stopped = " · not run: the evaluation was stopped" if self.stopped else ""
            line = (f"waits for choice{'s' if len(ahead) > 1 else ''} {named} (same "
                    f"server){after} · {figures['done']} done{stopped}")
        elif batch.started is None and (self.stopped or self.reopened or self.done):
            line = batch.progress_line() + (" · not started" if self.stopped else "")
        else:
            line = batch.progress_line()
        return figures["fraction"], line

    def counts(self) -> dict[str, int]:
        """Cells done, failed and in all, over every choice."""
        done = failed = 0
        for batch in self.batches:
            figures = batch.progress()
            done += figures["done"]
            failed += figures["failed"]
        return {"done": done, "failed": failed, "total": self.spec.cells}

    @property
    def wall_s(self) -> float | None:
        """This session's wall time, from the start to the end (or now)."""
        if self.started is None:
            return None
        return (self.ended or time.monotonic()) - self.started

    def cold_start_lines(self) -> list[str]:
        """What taking turns did for the cold starts, per lane of more than one choice: the
        cold starts met, and how many alternating the models could have cost (a reload at
        every switch: up to one per cell)."""
        lines = []
        for lane in self.lanes:
            if len(lane.choices) < 2:
                continue
            met = {index: sum(row.outcome.stats.cold_start for row in self.batches[index].rows)
                   for index in lane.choices}
            each = ", ".join(f"choice {index + 1}: {count}" for index, count in met.items())
            line = (f"{lane.server}: choices "
                    + ", ".join(str(index + 1) for index in lane.choices)
                    + f" took turns; {sum(met.values())} cold starts met ({each})")
            models = {self.spec.choices[index].model for index in lane.choices}
            if lane.reloads:
                cells = len(lane.choices) * self.spec.rows
                line += (f"; run at the same time, the {len(models)} models could have "
                         f"reloaded at every switch, up to {cells} cold starts")
            lines.append(line + ".")
        return lines

    # -- results -----------------------------------------------------------------------------
    def results(self, levels: ServiceLevels | None = None) -> list[ChoiceResult]:
        """What each choice's cells came to, goodput against ``levels`` (else the spec's)."""
        chosen = levels if levels is not None else self.spec.levels
        return [ChoiceResult.of(batch.rows, chosen,
                                streamed=choice.delivery != DELIVERY_ONE_PIECE)
                for batch, choice in zip(self.batches, self.spec.choices, strict=True)]

    def scorecard(self, levels: ServiceLevels | None = None) -> Scorecard:
        """The scorecard, its goodput against ``levels`` (the page's, else the spec's)."""
        chosen = levels if levels is not None else self.spec.levels
        return Scorecard.of(self.labels, self.results(chosen), chosen)

    def matrix(self) -> list[MatrixRow]:
        return matrix_rows(self.spec, [batch.rows for batch in self.batches])

    def cell(self, choice: int, row: int) -> BatchRow:
        return self.batches[choice].rows[row]

    def votable(self, row: int) -> list[int]:
        """The choices whose cell at location ``row`` answered: a blind vote's candidates."""
        return [choice for choice in range(len(self.batches))
                if (cell := self.cell(choice, row)).status in ANSWERED and cell.text.strip()]

    def contenders(self, row: int, order: Sequence[int]) -> tuple[Contender, ...]:
        """Who each letter is at location ``row``: letter i is choice ``order[i]``."""
        choices = self.spec.choices
        return tuple(
            Contender(letter, choices[choice].label, redact(choices[choice].host),
                      run.run_id if (run := self.cell(choice, row).run) is not None else None)
            for letter, choice in zip(LETTERS, order, strict=False))

    def ballot(self, row: int, order: Sequence[int]) -> Ballot:
        """A blind vote on the cells of location ``row`` (``order``: votable choices)."""
        cell = self.cell(order[0], row)
        return Ballot("evaluation", self.contenders(row, order), self.spec.system,
                      cell.request.prompt, cell.request.preset, self.spec.scenarios[row].name,
                      self.group_id)

    # -- exports -----------------------------------------------------------------------------
    def cells_table(self) -> list[dict[str, Any]]:
        """A line per cell, as the CSV and JSON have them."""
        table = []
        for choice, (label, batch) in enumerate(zip(self.labels, self.batches, strict=True)):
            params = self.spec.choices[choice]
            # An answer in one piece has no time to a first token: its one chunk is the end.
            streamed = params.delivery != DELIVERY_ONE_PIECE
            for row in batch.rows:
                stats = row.outcome.stats
                table.append({
                    "choice": choice + 1, "choice_label": label, "backend": params.backend,
                    "host": redact(params.host), "model": params.model,
                    "location_index": row.index + 1, "location": row.location.name,
                    "status": row.status, "attempts": row.attempts,
                    "ttft_s": _rounded(stats.first_chunk_s if streamed else None, 4),
                    "first_answer_token_s": _rounded(
                        stats.time_to_first_token_s if streamed else None, 4),
                    "e2el_s": _rounded(stats.last_chunk_s, 4),
                    "total_time_s": _rounded(row.seconds, 4),
                    "output_tokens": row.output_tokens,
                    "prompt_tokens": stats.prompt_tokens,
                    "client_tokens_per_s": _rounded(row.client_tokens_per_s, 2),
                    "cold_start": stats.cold_start, "structured": row.structured or "",
                    "notes": row.notes, "error": row.error,
                    **_check_columns(row.check)})
        return table

    def cells_csv(self) -> str:
        table = self.cells_table()
        header = list(table[0]) if table else []
        return csv_text(header, ([line[name] for name in header] for line in table))

    def to_dict(self, levels: ServiceLevels | None = None) -> dict[str, Any]:
        """Everything an analyst needs to quote it: the definition (hosts without
        credentials), the schedule, the figures' definitions, the scorecard with every
        serving figure under vLLM's result keys, and the cells."""
        card = self.scorecard(levels)
        spec = json.loads(self.spec.to_json())
        return {
            "kind": KIND, "group_id": self.group_id,
            "choices": [{"label": label, **choice, "model_digest": self.digest(index)}
                        for index, (label, choice) in enumerate(zip(self.labels,
                                                                    spec["choices"],
                                                                    strict=True))],
            "locations": [location["name"] for location in spec["scenarios"]],
            "system_prompt": self.spec.system, "layout": self.spec.layout,
            "service_levels_ms": asdict(card.levels),
            "schedule": schedule_lines(self.spec), "cold_starts": self.cold_start_lines(),
            "definitions": DEFINITIONS,
            "scorecard": card.to_dict(),
            "cells": [{**line, **check_dict(row.check), "answer": row.text,
                       "thinking": row.thinking}
                      for line, row in zip(self.cells_table(),
                                           (r for b in self.batches for r in b.rows),
                                           strict=True)]}

    def to_json(self, levels: ServiceLevels | None = None) -> str:
        return json.dumps(self.to_dict(levels), indent=2)

    def digest(self, choice: int) -> str:
        """The model digest(s) a choice's cells recorded, or that its server reports none."""
        return digest_text(row.outcome.stats.model_digest for row in self.cells(choice))

    def to_html(self, levels: ServiceLevels | None = None) -> str:
        """A standalone report, safe to open (the app's page template: no script runs,
        nothing is fetched), to send where no server is reachable: the system prompt, each
        choice's parameters and model digest, the scorecard, the matrix, the schedule, the
        definitions and every answer side by side per location (its user prompt folded
        above), each with its figure check."""
        card = self.scorecard(levels)
        matrix = self.matrix()
        labels = self.labels
        scorecard = table_html(["Figure", *labels], ([row.name, *row.marked()]
                                                     for row in card.rows))
        grid = table_html(["#", "Location", *labels, "Best"],
                          ([str(line.index + 1), line.location, *line.cells, line.best]
                           for line in matrix))
        parameters = parameters_html([
            Column(label, choice, self.digest(index),
                   {"Concurrency": str(choice.concurrency)})
            for index, (choice, label) in enumerate(zip(self.spec.choices, labels,
                                                        strict=True))])
        answers = "".join(
            f"<details><summary>{html.escape(f'{line.index + 1}. {line.location}')}"
            f"</summary>{_user_prompt_html(self.cell(0, line.index))}<div class=panes>"
            + "".join(_cell_html(label, self.cell(choice, line.index))
                      for choice, label in enumerate(labels))
            + "</div></details>" for line in matrix)
        schedule = "".join(f"<li>{html.escape(line)}</li>"
                           for line in (*schedule_lines(self.spec), *self.cold_start_lines()))
        return report_page(
            "PV LLM Studio evaluation",
            f"{len(labels)} choices · {self.spec.rows} locations · "
            f"{card.levels_text()}",
            f"<h2>Prompts</h2>{prompts_html(self.spec.system)}<p class=meta>Each location's "
            "user prompt is folded above its answers (Answers).</p>"
            f"<h2>Parameters</h2>{parameters}"
            f"<h2>Scorecard</h2>{scorecard}<p class=meta>{STAR} the best value of a row."
            f"</p><h2>Locations</h2>{grid}<h2>Schedule</h2><ul>{schedule}</ul>"
            f"<h2>Definitions</h2>{definitions_html({**DEFINITIONS, **CHECK_DEFINITIONS})}"
            f"<h2>Answers</h2>{answers}",
            wide=True)


def _user_prompt_html(row: BatchRow) -> str:
    """A location's user prompt (every choice's cell sends the same), folded."""
    return (f"<details class=prompt><summary>User prompt</summary>"
            f"{prompt_html(row.request.prompt)}</details>")


def _rounded(value: float | None, digits: int) -> float | None:
    return round(value, digits) if value is not None else None


def _check_columns(check: AnswerCheck | None) -> dict[str, Any]:
    columns = check.columns() if check is not None else {}
    return {name: columns.get(name, "") for name in CHECK_COLUMNS}


def cell_answer(row: BatchRow) -> str:
    """A cell's answer as pages and reports show it: a structured one as its report (not
    valid: its raw text, with why)."""
    if not row.request.structured:
        return row.text
    shown, verdict = shown_text(row.text, True, row.outcome.status)
    return shown if verdict is None or verdict.valid else f"{verdict.line}\n\n{shown}"


def _cell_html(label: str, row: BatchRow) -> str:
    error = (f"<p><strong>Error:</strong> {html.escape(row.error)}</p>" if row.error else "")
    return (f"<section><h3>{html.escape(label)}</h3><p class=meta>"
            f"{html.escape(cell_line(row))}</p>{error}{thinking_html(row.thinking)}"
            f"{markdown_to_safe_html(cell_answer(row))}{check_html(row.check)}</section>")


# -- the figures ---------------------------------------------------------------------------
def busy_time(spans: Iterable[tuple[float, float]]) -> float:
    """The length of the union of ``(start, end)`` spans: the time anything was in flight."""
    total, reach = 0.0, None
    for start, end in sorted(spans):
        if reach is None or start > reach:
            total += end - start
            reach = end
        elif end > reach:
            total += end - reach
            reach = end
    return total


def row_timings(rows: Sequence[BatchRow]) -> tuple[list[RequestTiming], float | None]:
    """The requests of a choice's cells that ran (answered or failed), as the serving
    figures take them, and their duration (``busy_time`` of their spans; None: none ran)."""
    ran = [row for row in rows if row.started_at is not None
           and row.status not in (Status.PENDING, Status.RUNNING, Status.RETRYING,
                                  Status.STOPPED)]
    if not ran:
        return [], None
    first = min(row.started_at for row in ran if row.started_at is not None)
    timings, spans = [], []
    for row in ran:
        assert row.started_at is not None
        start = (row.started_at - first).total_seconds()
        stats = row.outcome.stats
        # A stream ended early (Stop, the repetition guard) has no usage chunk: its chunks
        # stand in for the count, as vLLM's client would count the text's tokens (a token
        # per chunk, as vLLM and Ollama stream by default).
        timings.append(request_timing(stats, row.outcome.status, start,
                                      estimated_output_tokens=stats.chunks or None))
        spans.append((start, start + (stats.total_time_s or stats.last_chunk_s or 0.0)))
    duration = busy_time(spans)
    return timings, duration if duration > 0 else None


@dataclass(frozen=True)
class ChoiceResult:
    """What one choice's cells came to."""

    answered: int
    failed: int
    length: int  # hit max tokens
    prompt_cut: int  # the server cut the prompt
    repetition: int  # stopped by the repetition guard
    cold_starts: int
    right: int  # figures right, over the graded answers
    asked: int  # figures asked of the graded answers
    grounding: float | None  # the mean grounding score of the answers graded
    structured: str  # 'valid structured: 28 of 30' ('' for markdown)
    structured_share: float | None
    thinking: bool  # a reasoning model: some cell thought
    metrics: ServingMetrics | None  # None when no cell ran
    # Token by token: its chunk timings mean something. An answer in one piece is one chunk:
    # its TTFT is the whole wait, and TPOT and ITL are 0, which would win every latency row.
    streamed: bool = True
    # The latencies that have samples (of "ttft", "tpot", "itl", "e2el", "first_answer"):
    # vLLM's statistics of none are a lone 0, which would win its row (every cell failed;
    # no answer longer than one token; no answer token after the thinking).
    sampled: frozenset[str] = frozenset(("ttft", "tpot", "itl", "e2el", "first_answer"))

    @classmethod
    def of(cls, rows: Sequence[BatchRow], levels: ServiceLevels,
           streamed: bool = True) -> ChoiceResult:
        answered = [row for row in rows if row.status in ANSWERED]
        graded = [row.check for row in answered
                  if row.check is not None and not row.check.figures.not_graded]
        scores = [row.grounding for row in answered
                  if row.grounding is not None and not row.not_graded]
        verdicts = [verdict for row in rows if (verdict := row.verdict) is not None]
        timings, duration = row_timings(rows)
        return cls(
            answered=len(answered), failed=sum(row.status == Status.FAILED for row in rows),
            length=sum(row.status == Status.LENGTH for row in rows),
            prompt_cut=sum(bool(row.outcome.stats.prompt_truncated) for row in rows),
            repetition=sum(row.status == Status.REPETITION for row in rows),
            cold_starts=sum(row.outcome.stats.cold_start for row in rows),
            right=sum(check.figures.right for check in graded),
            asked=sum(check.figures.asked for check in graded),
            grounding=sum(scores) / len(scores) if scores else None,
            structured=valid_share(verdicts),
            structured_share=(sum(v.valid for v in verdicts) / len(verdicts)
                              if verdicts else None),
            thinking=any(row.thinking.strip() for row in rows),
            metrics=(serving_metrics(timings, duration, DEFAULT_PERCENTILES, levels)
                     if duration else None),
            streamed=streamed, sampled=_sampled(timings))


def _sampled(timings: Sequence[RequestTiming]) -> frozenset[str]:
    """The latencies that the answered requests give samples of (``ChoiceResult.sampled``)."""
    done = [timing for timing in timings if timing.success]
    has = {"ttft": bool(done), "e2el": bool(done),
           "tpot": any(timing.output_len > 1 for timing in done),
           "itl": any(timing.itl_s for timing in done),
           "first_answer": any(timing.first_answer_s is not None for timing in done)}
    return frozenset(name for name, present in has.items() if present)


class Better(StrEnum):
    HIGHER = "higher"
    LOWER = "lower"


@dataclass(frozen=True)
class ScoreRow:
    """A line of the scorecard: a figure for each choice, and which way is better."""

    name: str
    values: tuple[float | None, ...]
    shown: tuple[str, ...]
    better: Better | None = None
    key: str = ""  # its key in the JSON (vLLM's result key where it has one)
    # The choices that may be marked best: those that answered (a choice that answered
    # nothing has no wall time, no cut answers: its zeros win nothing). None: all.
    eligible: frozenset[int] | None = None

    @property
    def best(self) -> set[int]:
        """The choices with the best value, ties as shown (two values that read the same
        are both best); none when fewer than two eligible choices have a value or all of
        them read the same."""
        if self.better is None:
            return set()
        present = {index: value for index, value in enumerate(self.values)
                   if value is not None and (self.eligible is None or index in self.eligible)}
        pick = max if self.better == Better.HIGHER else min
        if len(present) < 2:
            return set()
        top = self.shown[pick(present, key=present.__getitem__)]
        best = {index for index in present if self.shown[index] == top}
        return set() if len(best) == len(present) else best

    def marked(self) -> list[str]:
        best = self.best
        return [f"{STAR} {text}" if index in best else text
                for index, text in enumerate(self.shown)]


def _seconds(ms: float | None) -> str:
    if ms is None:
        return "–"
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"


def _share(part: int, whole: int) -> str:
    return f"{part} of {whole} ({part / whole:.0%})" if whole else "–"


@dataclass(frozen=True)
class Scorecard:
    """The choices side by side, a ``ScoreRow`` per figure."""

    labels: list[str]
    rows: list[ScoreRow]
    levels: ServiceLevels
    results: list[ChoiceResult] = field(repr=False)

    @classmethod
    def of(cls, labels: list[str], results: list[ChoiceResult],
           levels: ServiceLevels) -> Scorecard:
        rows: list[ScoreRow] = []

        answered = frozenset(index for index, result in enumerate(results) if result.answered)

        def add(name: str, values: Sequence[float | None], shown: Sequence[str],
                better: Better | None, key: str) -> None:
            # How many answered or failed compares every choice; the rest, those that answered.
            everyone = key in ("answered", "failed")
            rows.append(ScoreRow(name, tuple(values), tuple(shown), better, key,
                                 None if everyone else answered))

        def count(name: str, attribute: str, better: Better) -> None:
            values = [getattr(result, attribute) for result in results]
            add(name, values, [str(value) for value in values], better, attribute)

        count("Answered", "answered", Better.HIGHER)
        count("Failed", "failed", Better.LOWER)
        count("Hit max tokens", "length", Better.LOWER)
        count("Prompt cut by the server", "prompt_cut", Better.LOWER)
        count("Stopped by the repetition guard", "repetition", Better.LOWER)
        add("Figures right", [r.right / r.asked if r.asked else None for r in results],
            [_share(r.right, r.asked) for r in results], Better.HIGHER, "figures_right")
        add("Grounding", [r.grounding for r in results],
            [f"{r.grounding:.0%}" if r.grounding is not None else "–" for r in results],
            Better.HIGHER, "grounding")
        if any(r.structured for r in results):
            add("Valid structured", [r.structured_share for r in results],
                [r.structured.removeprefix("valid structured: ") or "–" for r in results],
                Better.HIGHER, "valid_structured")
        count("Cold starts", "cold_starts", Better.LOWER)
        metrics = [r.metrics for r in results]
        latencies = [("TTFT", "ttft"), ("TPOT", "tpot"), ("ITL", "itl"), ("E2EL", "e2el")]
        if any(r.thinking for r in results):
            latencies.append(("First answer token", "first_answer"))
        for title, name in latencies:
            # E2EL holds for an answer in one piece; the chunk timings do not (``streamed``).
            whole = [bool(r.metrics) and not r.streamed and name != "e2el" for r in results]
            timed = [r.metrics if r.metrics and not one and name in r.sampled else None
                     for r, one in zip(results, whole, strict=True)]
            for p in DEFAULT_PERCENTILES:
                values = [getattr(m, name).percentile(p) if m else None for m in timed]
                shown = [ONE_PIECE if one else _seconds(v)
                         for one, v in zip(whole, values, strict=True)]
                key = "answer_ttft" if name == "first_answer" else name
                add(f"{title} p{percentile_word(p)}", values, shown, Better.LOWER,
                    f"p{percentile_word(p)}_{key}_ms")
        throughputs = [("Output tokens/s", "output_throughput", "{:.1f}"),
                       ("Requests/s", "request_throughput", "{:.3f}")]
        for title, key, form in throughputs:
            values = [getattr(m, key) if m else None for m in metrics]
            add(title, values, [form.format(v) if v is not None else "–" for v in values],
                Better.HIGHER, key)
        if levels.as_config():
            values = [m.request_goodput if m else None for m in metrics]
            add(f"Goodput ({_levels_words(levels)}), req/s", values,
                [f"{v:.3f}" if v is not None else "–" for v in values], Better.HIGHER,
                "request_goodput")
        walls = [m.duration_s if m else None for m in metrics]
        add("Wall time", walls, [f"{v:.1f} s" if v is not None else "–" for v in walls],
            Better.LOWER, "duration")
        return cls(labels, rows, levels, results)

    def levels_text(self) -> str:
        return (f"goodput against {_levels_words(self.levels)}" if self.levels.as_config()
                else "no service levels set")

    def table(self) -> list[dict[str, str]]:
        """The page's table: a line per figure, a column per choice, the best marked."""
        return [{"Figure": row.name, **dict(zip(self.labels, row.marked(), strict=True))}
                for row in self.rows]

    def to_csv(self) -> str:
        return csv_text(["figure", *self.labels],
                        ([row.name, *row.marked()] for row in self.rows))

    def to_dict(self) -> dict[str, Any]:
        """Per choice: each figure's value under its key, the serving figures whole under
        vLLM's result keys, and the best marks."""
        return {"choices": [
            {"label": label,
             "figures": {row.key: row.values[index] for row in self.rows},
             "best": [row.key for row in self.rows if index in row.best],
             "serving": result.metrics.result() if result.metrics else None}
            for index, (label, result) in enumerate(zip(self.labels, self.results,
                                                        strict=True))]}


def _levels_words(levels: ServiceLevels) -> str:
    names = {"ttft": "TTFT", "tpot": "TPOT", "e2el": "E2EL"}
    return ", ".join(f"{names[name]} ≤ {_seconds(value)}"
                     for name, value in levels.as_config().items())


# -- the matrix ----------------------------------------------------------------------------
def cell_line(row: BatchRow) -> str:
    """'6 of 8 · 42.1 s · cold start': a cell's figures right, time and marks."""
    if row.status in (Status.PENDING, Status.RUNNING, Status.RETRYING):
        return status_label(row.status)
    parts = []
    if row.status in ANSWERED:
        parts.append(row.figures_right or row.not_graded or "not graded")
        if row.seconds is not None:
            parts.append(f"{row.seconds:.1f} s")
    if row.status != Status.FINISHED:
        parts.append(status_label(row.status))
    if row.notes:
        parts.append(row.notes)
    return " · ".join(parts)


def cell_rank(row: BatchRow) -> tuple[float, float] | None:
    """How good a cell is, to find a location's best choice: its share of figures right,
    then the shorter time. None: not answered or not graded."""
    if row.status not in ANSWERED or row.check is None or row.check.figures.not_graded:
        return None
    figures = row.check.figures
    share = figures.right / figures.asked if figures.asked else 0.0
    # A time not recorded is no time at all: it never wins a tie.
    return share, -(row.seconds if row.seconds is not None else math.inf)


@dataclass(frozen=True)
class MatrixRow:
    """A location's line: a cell per choice, the best choice, and whether they differ."""

    index: int
    location: str
    cells: list[str]
    best: str  # the best choice's number(s) ('' when none is answered and graded)
    differs: bool  # the cells' figures right or statuses are not all the same


def matrix_rows(spec: EvaluationSpec, rows_by_choice: Sequence[Sequence[BatchRow]]
                ) -> list[MatrixRow]:
    lines = []
    for index, location in enumerate(spec.scenarios):
        cells = [rows[index] for rows in rows_by_choice]
        ranks = {choice: rank for choice, cell in enumerate(cells)
                 if (rank := cell_rank(cell)) is not None}
        top = max(ranks.values()) if ranks else None
        best = ", ".join(str(choice + 1) for choice, rank in ranks.items() if rank == top)
        outcome = {(cell.figures_right, cell.status) for cell in cells}
        lines.append(MatrixRow(index, location.name, [cell_line(cell) for cell in cells],
                               f"{STAR} {best}" if best else "", len(outcome) > 1))
    return lines


# -- history -------------------------------------------------------------------------------
# The evaluations this process works on, by history group (``studio.process`` holds one).
LiveEvaluations = LiveJobs[Evaluation]


class EvaluationRunning(RuntimeError):
    """A live process works on the evaluation: watch or stop it, do not resume it."""


def earlier_cells(store: RunStore, group_id: int
                  ) -> tuple[dict[int, StoredRun], dict[int, StoredRun], dict[int, int]]:
    """A recorded evaluation's cells so far, by position: the answered ones, the last run
    of every other one, and the attempts made at each."""
    answered: dict[int, StoredRun] = {}
    last: dict[int, StoredRun] = {}
    attempts: dict[int, int] = {}
    for run in store.group_runs(group_id):
        attempts[run.position] = attempts.get(run.position, 0) + 1
        if run.status in ANSWERED:
            answered[run.position] = run
        last[run.position] = run
    others = {position: run for position, run in last.items() if position not in answered}
    return answered, others, attempts


def evaluation_state(summary: GroupSummary) -> Status:
    """How a recorded evaluation stands (``studio.runs.batch.group_state``'s words)."""
    return group_state(summary, EvaluationSpec.from_json(summary.group.spec).cells)


def reopen(store: RunStore, group_id: int) -> Evaluation:
    """A recorded evaluation shown again, as far as it got: nothing is run. Failed cells
    show their error; cells never run are waiting."""
    group = store.get_group(group_id)
    if group is None or group.kind != KIND:
        raise ValueError(f"No evaluation #{group_id} in the history.")
    spec = EvaluationSpec.from_json(group.spec)
    answered, others, attempts = earlier_cells(store, group_id)
    evaluation = Evaluation(spec, build=_not_built, finished_before=answered,
                            attempts_before=attempts, group_id=group_id)
    evaluation.reopened = True
    for batch in evaluation.batches:  # shown as recorded: nothing was resumed in this view
        for row in batch.rows:
            row.resumed = False
    for position, run in others.items():
        choice, index = spec.cell_of(position)
        if choice >= len(evaluation.batches) or index >= spec.rows:
            continue
        row = evaluation.cell(choice, index)
        row.take(run.outcome)
        failed = run.status == Status.ERROR
        row.status = Status.FAILED if failed else Status.STOPPED
        row.error = run.error or ""
        # A failed request counts in the serving figures (inside their duration, among the
        # failed), as it did live: from its start as recorded. A stopped one does not.
        row.started_at = datetime.fromisoformat(run.created_at) if failed else None
    return evaluation


def _check_resumable(store: RunStore, group_id: int, spec: EvaluationSpec) -> None:
    """A resume's definition must lay its cells out as the recorded one did (the same
    choices' servers and models, the same locations in order): a cell's history position
    is ``choice * rows + row``, so any other would take one cell's answer for another's."""
    group = store.get_group(group_id)
    if group is None or group.kind != KIND:
        raise ValueError(f"No evaluation #{group_id} in the history.")
    recorded = EvaluationSpec.from_json(group.spec)
    if [(server_of(c), c.model) for c in recorded.choices] != [
            (server_of(c), c.model) for c in spec.choices] or [
            place.name for place in recorded.scenarios] != [
            place.name for place in spec.scenarios]:
        raise ValueError(f"Evaluation #{group_id} was recorded with other choices or "
                         "locations: resume it with its own definition.")


def _not_built(choice: Choice) -> Backend:
    raise RuntimeError("a reopened evaluation runs nothing")


def launch(spec: EvaluationSpec, *, build: Callable[[Choice], Backend],
           store: RunStore | None, group_id: int | None = None, user: str = "",
           live: LiveEvaluations | None = None, capacity: Capacity | None = None,
           probes: ProbeCache | None = None) -> Evaluation:
    """Start an evaluation, recorded in a new history group, or resume the one recorded as
    ``group_id`` (its answered cells kept, not run again). The group is claimed for this
    process first: one a live worker runs raises ``EvaluationRunning``. While it runs it
    is in ``live`` for other sessions to watch."""
    finished: dict[int, StoredRun] = {}
    attempts: dict[int, int] = {}
    if store is not None:
        if group_id is None:
            group_id = store.create_group(KIND, spec=spec.to_json(), user=user)
        else:
            _check_resumable(store, group_id, spec)
            finished, _, attempts = earlier_cells(store, group_id)
        if not store.claim_group(group_id):
            raise EvaluationRunning(
                f"Evaluation #{group_id} is running in another session or app process: "
                "watch or stop it there; resume it once it stopped.")
        store.set_group_spec(group_id, spec.to_json())

    def ended() -> None:
        if group_id is not None:
            if live is not None:
                live.remove(group_id)
            if store is not None:
                store.release_group(group_id)

    recording = (lambda position: Recording(store, PAGE, group_id, position, user)) \
        if store is not None else None
    try:
        evaluation = Evaluation(spec, build=build, recording=recording,
                                finished_before=finished, attempts_before=attempts,
                                group_id=group_id, on_end=ended, capacity=capacity,
                                probes=probes)
    except BaseException:
        ended()  # never started: the group is not left claimed by a live process
        raise
    if group_id is not None and live is not None:
        live.add(group_id, evaluation)
    return evaluation.start()
