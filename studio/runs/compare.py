"""Compare: the same prompt on 2-4 panes at once, repeated N times, with honest figures.

A ``Comparison`` runs its rounds one after another on a coordinator thread, and the panes of
a round all at once (each ``Run`` on its own thread), so a round takes as long as its slowest
pane. The page only polls it. Figures are aggregated per pane over the rounds (median, min,
max); the first round is flagged as a possible cold start (Ollama unloads idle models).
"""

from __future__ import annotations

import html
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from backends.base import Backend, ModelState
from backends.context import ContextFit
from backends.errors import BackendError
from backends.http import redact
from backends.status import Status
from backends.stream import GenerationStats, TokenStream
from studio.pv.checks import (
    CHECK_DEFINITIONS,
    AnswerCheck,
    check_dict,
    check_html,
    check_run,
)
from studio.pv.grounding import GroundingReport
from studio.pv.location import Location
from studio.pv.structured import Verdict, shown_text, valid_share
from studio.pv.structured import check as check_structured
from studio.pv.structured import counted as counted_structured
from studio.records.render import markdown_to_safe_html, report_page, thinking_html
from studio.records.report import (
    Column,
    definitions_html,
    digest_text,
    parameters_html,
    prompts_html,
    table_html,
)
from studio.runs.capacity import Capacity
from studio.runs.connection import ProbeCache
from studio.runs.job import Job
from studio.runs.request import ANSWERED, RunParams, RunRequest, flat_dict
from studio.runs.runner import Recording, Run
from studio.runs.serving import DEFINITIONS
from studio.votes.ballot import LETTERS, Ballot, Contender

MAX_PANES = 4
MAX_REPEATS = 10
TIMINGS = ("ttft", "total")  # the keys of FIGURES in the Compare page's two bar charts
SPEEDS = ("client_tps", "server_tps")
# Figures of the measurement table: (key, label, how to read it from a run).
FIGURES: list[tuple[str, str, Callable[[GenerationStats], float | int | None]]] = [
    ("ttft", "Time to first token (s)", lambda s: s.time_to_first_token_s),
    ("thinking", "Thinking (s)", lambda s: s.thinking_s),  # a reasoning model's, beside it
    ("total", "Total time (s)", lambda s: s.total_time_s),
    ("output_tokens", "Output tokens", lambda s: s.output_tokens),
    ("client_tps", "Tokens/s (client)", lambda s: s.client_tokens_per_s),
    ("server_tps", "Tokens/s (server)", lambda s: s.server_tokens_per_s),
    ("prompt_tokens", "Prompt tokens", lambda s: s.prompt_tokens),
    ("load", "Model load (s)", lambda s: s.server_load_s),
    ("window", "Context window", lambda s: s.context_window),
]

# What each figure of the table means (FIGURES' keys), one definition each; a figure that is
# one of the serving figures is defined in their words (vllm bench serve's: DEFINITIONS).
FIGURE_DEFINITIONS: dict[str, str] = {
    "ttft": "from sending the request to the first token of the answer, after a reasoning "
            "model's thinking: Evaluate's first answer token (its TTFT, vllm bench serve's, "
            "is the first chunk of either); an answer in one piece: its total time.",
    "thinking": "a reasoning model's thinking: from its first thinking token to its first "
                "answer token (or the end).",
    "total": DEFINITIONS["E2EL"] + " Measured by this app, as the client saw it.",
    "output_tokens": DEFINITIONS["Output tokens"],
    "client_tps": "output tokens over the time from the first token (thinking or answer) to "
                  "the end, as the client saw it; over the whole wait for an answer in one "
                  "piece.",
    "server_tps": "the decode speed the server reports (Ollama: eval_count / eval_duration); "
                  "a dash where the server reports none.",
    "prompt_tokens": "the prompt's tokens as the server counted them (Ollama's "
                     "prompt_eval_count, usage.prompt_tokens).",
    "load": "the time the server spent loading the model for the run (Ollama's "
            "load_duration): seconds mean a cold start.",
    "window": "the tokens the run's context held, prompt and answer (Ollama's num_ctx as "
              "sized for the run, vLLM's max_model_len, the embedded model's n_ctx).",
}
# The table's other columns that need words.
_TABLE_DEFINITIONS: dict[str, str] = {
    "Runs": "the measured runs (those that finished with an answer by the model's own stop) "
            "and the runs left out, each with its reason; each figure is the median "
            "(min–max) over the measured runs.",
}


def definitions() -> dict[str, str]:
    """The report's definitions: each figure by its label in the table, the table's other
    columns, and the checks."""
    return {**{label: FIGURE_DEFINITIONS[key] for key, label, _ in FIGURES},
            **_TABLE_DEFINITIONS, **CHECK_DEFINITIONS}


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    count: int

    def __str__(self) -> str:
        if self.count == 1 or self.low == self.high:
            return _number(self.median)
        return f"{_number(self.median)} ({_number(self.low)}–{_number(self.high)})"


def spread(values: list[float | int | None]) -> Spread | None:
    """Median, min and max of the values present; None when there are none."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    return Spread(statistics.median(present), min(present), max(present), len(present))


def pane_labels(panes: list[RunParams]) -> list[str]:
    """Each pane's label, numbered; the host is added where panes of the same backend and
    model differ by server (the same model on two machines)."""

    def label(pane: RunParams) -> str:
        hosts = {other.host for other in panes if other.label == pane.label}
        return f"{pane.label} · {redact(pane.host)}" if len(hosts) > 1 else pane.label

    return [f"{index + 1}. {label(pane)}" for index, pane in enumerate(panes)]


def is_measured(run: Run) -> bool:
    """Whether a run's figures count: it ended by the model's own stop, with an answer.

    A run cut at max tokens is not (a thinking model may spend them all thinking and answer
    nothing), nor an empty answer, a looping one, a stopped or a failed run: their times are
    not the model's time to answer, so they stay out of the medians and charts."""
    return run.done and run.status == Status.FINISHED and bool(run.text.strip())


def left_out_reason(run: Run) -> str:
    """Why a finished run is not measured, in the table's words: 'hit max tokens', 'hit max
    tokens before any answer', 'empty answer', 'stopped', 'error'."""
    label = run.status_label.lower()
    if run.status in ANSWERED and not run.text.strip():
        return "empty answer" if run.status == Status.FINISHED else f"{label} before any answer"
    return label


def _run_counts(runs: list[Run]) -> str:
    """How many runs a pane's figures cover, and the ones left out, each with its reason:
    '2 measured · 1 hit max tokens before any answer · 1 stopped'."""
    measured = sum(is_measured(run) for run in runs)
    left_out = Counter(left_out_reason(run) for run in runs
                       if run.done and not is_measured(run))
    return " · ".join([f"{measured} measured",
                       *(f"{count} {label}" for label, count in sorted(left_out.items()))])


def _notes(runs: list[Run]) -> str:
    """The marks of a pane's finished runs: 'prompt truncated by the server (2 of 3)'."""
    done = [run for run in runs if run.done]
    counts = Counter(note for run in done for note in run.outcome.notes)
    return ", ".join(note if len(done) == 1 else f"{note} ({count} of {len(done)})"
                     for note, count in counts.items()) or "–"


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:,.2f}"


class Comparison(Job):
    """Start with ``Comparison(...).start()``; poll ``rounds``, ``done``; ``stop()``."""

    name = "comparison"

    def __init__(self, panes: list[RunParams], system: str, prompt: str, *, repeats: int = 1,
                 preset: str = "", location: Location | None = None,
                 build: Callable[[RunParams], Backend],
                 record: Callable[[int], Recording | None] | None = None,
                 capacity: Capacity | None = None, probes: ProbeCache | None = None,
                 group_id: int | None = None) -> None:
        """``record(pane_index)`` says where each pane's runs go in the history (the group
        ``group_id``); ``capacity`` and ``probes`` are the process's, for every run (``Run``)."""
        super().__init__()
        self.group_id = group_id
        if not 1 <= len(panes) <= MAX_PANES:
            raise ValueError(f"Compare takes 1 to {MAX_PANES} panes")
        self.panes = panes
        self.system, self.prompt, self.preset = system, prompt, preset
        self.location = location  # the row the prompt was built from: the figure check's
        self.repeats = max(1, min(repeats, MAX_REPEATS))
        self.started_at = datetime.now(UTC)
        self.rounds: list[list[Run]] = []
        self.round_walls: list[float] = []
        self._stopped_panes: set[int] = set()  # panes stopped on their own (stop_pane)
        # (round, pane) of the runs a stopped pane sat out: never started, nothing sent
        self._sat_out: set[tuple[int, int]] = set()
        self._began: float | None = None  # time.monotonic() as the first round started
        self._ended: float | None = None  # and as the last one ended
        self._build = build
        self._record = record
        self._capacity, self._probes = capacity, probes

    def _cancel(self) -> None:
        """Stop: cancel every pane still running; finished panes keep their answers."""
        for run in self.current_round:
            run.stop()

    def stop_pane(self, index: int) -> None:
        """Stop one pane: its run in flight ends (its partial text kept) and it sits out the
        rounds still to come, while the other panes go on. The last pane stopped stops all."""
        self._stopped_panes.add(index)
        if len(self._stopped_panes) >= len(self.panes):
            self.stop()
            return
        runs = self.current_round
        if index < len(runs):
            runs[index].stop()

    def pane_stopped(self, index: int) -> bool:
        """Whether the pane was stopped (on its own, or with all of them)."""
        return self.stopped or index in self._stopped_panes

    @property
    def current_round(self) -> list[Run]:
        return self.rounds[-1] if self.rounds else []

    def request(self, pane: RunParams) -> RunRequest:
        return RunRequest(**pane.param_fields(), system=self.system, prompt=self.prompt,
                          preset=self.preset, location=self.location)

    def _work(self) -> None:
        for _ in range(self.repeats):
            if self._stop.is_set():
                break
            # Every pane is made ready first (backends built, nothing sent), then they all
            # start together; a Stop meanwhile means none of them sends a request.
            runs = [self._prepare_pane(index, pane) for index, pane in enumerate(self.panes)]
            self.rounds.append(runs)
            started = time.monotonic()
            if self._began is None:
                self._began = started
            for index, run in enumerate(runs):
                if self.pane_stopped(index):
                    self._sat_out.add((len(self.rounds) - 1, index))
                    run.stop()  # never started: it ends as stopped, nothing sent
                else:
                    run.start()
            for run in runs:
                run.wait()
            ends = [run.end_time for run in runs if run.end_time is not None]
            self._ended = max(ends) if ends else time.monotonic()
            self.round_walls.append(self._ended - started)

    def _prepare_pane(self, index: int, pane: RunParams) -> Run:
        try:
            backend: Backend = self._build(pane)
        except BackendError as exc:  # e.g. a GGUF path that does not exist: this pane only
            backend = _Unavailable(exc)
        recording = self._record(index) if self._record else None
        return Run(backend, self.request(pane), recording, self._capacity, self._probes)

    # -- figures ----------------------------------------------------------------------------
    def pane_runs(self, index: int) -> list[Run]:
        """One pane's runs, round by round."""
        return [runs[index] for runs in self.rounds if index < len(runs)]

    def shown_run(self, index: int) -> Run | None:
        """The run a pane shows: its latest, or its last real one when it sat out the rounds
        after its Stop (the stopped run with its partial answer, not an empty one)."""
        runs = [runs[index] for number, runs in enumerate(self.rounds)
                if index < len(runs) and (number, index) not in self._sat_out]
        if runs:
            return runs[-1]
        current = self.current_round
        return current[index] if index < len(current) else None

    @property
    def shown_round(self) -> list[Run]:
        """The run each pane shows (``shown_run``): the latest round, but a pane that sat it
        out keeps its last real run."""
        shown = (self.shown_run(index) for index in range(len(self.current_round)))
        return [run for run in shown if run is not None]

    def measured_runs(self, index: int) -> list[Run]:
        """The runs of a pane that count in its figures (``is_measured``): finished, with an
        answer. A stopped run's times are the Stop's, not the model's; an error's are the
        failure's; a run cut at max tokens was not done answering."""
        return [run for run in self.pane_runs(index) if is_measured(run)]

    def figures(self, index: int) -> dict[str, Spread | None]:
        runs = self.measured_runs(index)
        return {key: spread([read(run.stats) for run in runs]) for key, _, read in FIGURES}

    def medians(self, keys: tuple[str, ...]) -> dict[str, dict[str, float | None]]:
        """A chart's data: per pane with any of these figures measured, its label and
        {figure label: median}, for the figures some pane has. A pane or a figure with
        nothing measured is left out: no bar, not a zero or an empty one."""
        names = {key: label for key, label, _ in FIGURES}
        medians = [{names[key]: value.median for key in keys
                    if (value := self.figures(index)[key]) is not None}
                   for index in range(len(self.panes))]
        present = [names[key] for key in keys if any(names[key] in m for m in medians)]
        return {label: {name: values.get(name) for name in present}
                for label, values in zip(self.labels, medians, strict=True) if values}

    def unmeasured(self) -> list[str]:
        """The labels of the panes with no measured run (``is_measured``)."""
        return [label for index, label in enumerate(self.labels)
                if not self.measured_runs(index)]

    @property
    def labels(self) -> list[str]:
        return pane_labels(self.panes)

    def check(self, index: int) -> AnswerCheck | None:
        """The checks of the answer the pane shows (``shown_run``), once it has ended."""
        run = self.shown_run(index)
        if run is None or not run.done:
            return None
        return check_run(run.text, run.request, run.stats.to_dict())

    def grounding(self, index: int) -> GroundingReport | None:
        """The grounding check of the answer the pane shows, once it has ended."""
        check = self.check(index)
        return check.grounding if check else None

    def verdicts(self, index: int) -> list[Verdict]:
        """The structured answers of a pane's runs that ended, checked ([] for markdown)."""
        if not self.panes[index].structured:
            return []
        return [check_structured(run.text, run.status) for run in self.pane_runs(index)
                if run.done and counted_structured(run.text, run.status)]

    def valid_share(self, index: int) -> str:
        """'valid structured: 4 of 5' over a pane's runs ('' for a markdown pane)."""
        return valid_share(self.verdicts(index))

    def table(self) -> list[dict[str, str]]:
        """The measurement table: one row per pane, figures as 'median (min–max)'."""
        rows = []
        for index, (pane, label) in enumerate(zip(self.panes, self.labels, strict=True)):
            runs = self.pane_runs(index)
            figures = self.figures(index)
            row = {"Pane": label, "Mode": pane.delivery, "Runs": _run_counts(runs)}
            for key, label, _ in FIGURES:
                value = figures[key]
                row[label] = "–" if value is None else str(value)
            if pane.delivery == "one piece" and figures["ttft"] is not None:
                row["Time to first token (s)"] += " = total"
            row["Stop reason"] = ", ".join(sorted({run.status_label for run in runs})) or "–"
            row["Notes"] = _notes(runs)
            check = self.check(index)
            row["Figures right"] = check.figures.score or "–" if check else "–"
            row["Grounding"] = check.grounding.summary() if check else "–"
            row["Answer format"] = pane.answer_format.label
            row["Structured"] = self.valid_share(index) or "–"
            rows.append(row)
        return rows

    @property
    def wall_time(self) -> float | None:
        """Wall time of the last finished round: the slowest pane's, not the sum."""
        return self.round_walls[-1] if self.round_walls else None

    @property
    def total_wall_time(self) -> float | None:
        """Wall time of the whole comparison: from the first round's start to the last
        finished round's end (every round, one after another)."""
        if self._began is None or self._ended is None:
            return None
        return self._ended - self._began

    def wall_summary(self) -> str:
        """'117.11 s over 2 rounds (79.69 s, 37.42 s)', or '37.42 s' for one round."""
        total = self.total_wall_time
        if total is None:
            return "–"
        walls = self.round_walls
        if len(walls) == 1:
            return f"{total:.2f} s"
        return (f"{total:.2f} s over {len(walls)} rounds ("
                + ", ".join(f"{wall:.2f} s" for wall in walls) + ")")

    def timelines(self) -> dict[str, list[tuple[float, int]]]:
        """Characters received over time, per pane, in the run it shows (``shown_round``)."""
        return {label: list(run.timeline)
                for label, run in zip(self.labels, self.shown_round, strict=False)}

    def contenders(self, order: Sequence[int]) -> tuple[Contender, ...]:
        """Who each letter is: letter i is pane ``order[i]``, with the run it shows (its row
        in the history)."""
        return tuple(
            Contender(letter, self.panes[index].label, redact(self.panes[index].host),
                      run.run_id if (run := self.shown_run(index)) is not None else None)
            for letter, index in zip(LETTERS, order, strict=False))

    def ballot(self, order: Sequence[int]) -> Ballot | None:
        """The blind vote on this comparison: between the panes that answered (a failed or
        stopped pane is no model's loss); None when fewer than two did."""
        answered = [contender for contender, index in zip(self.contenders(order), order,
                                                          strict=False)
                    if (run := self.shown_run(index)) is not None and run.status in ANSWERED
                    and run.text.strip()]
        if len(answered) < 2:
            return None
        return Ballot("compare", tuple(answered), self.system, self.prompt, self.preset,
                      self.location.name if self.location else "", self.group_id)

    # -- export -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at.isoformat(),
            "preset": self.preset, "system_prompt": self.system, "user_prompt": self.prompt,
            "repeats": self.repeats, "stopped": self.stopped,
            "wall_time_s": self.total_wall_time, "round_wall_times_s": self.round_walls,
            "definitions": definitions(),
            "panes": [
                {"config": {**flat_dict(pane), "host": redact(pane.host)}, "mode": pane.delivery,
                 "model_digest": self.digest(index),
                 "figures": {key: (asdict(value) if value else None)
                             for key, value in self.figures(index).items()},
                 **check_dict(self.check(index)),
                 "structured": self.valid_share(index) or None,
                 "runs": [run.to_dict() for run in self.pane_runs(index)]}
                for index, pane in enumerate(self.panes)],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def digest(self, index: int) -> str:
        """The model digest(s) a pane's runs recorded, or that its server reports none."""
        return digest_text(run.stats.model_digest for run in self.pane_runs(index))

    def to_html(self) -> str:
        """A standalone report, to send where no server is reachable: the prompts, each
        pane's parameters and model digest, the answers side by side with their figure
        checks, the table, the definitions, the timeline as a table."""
        columns = "".join(
            f"<section><h2>{html.escape(label)}</h2><p class=meta>"
            f"{html.escape(pane.delivery)} · {html.escape(run.status_label)}</p>"
            f"{_error_html(run)}{thinking_html(run.thinking)}"
            f"{markdown_to_safe_html(_shown(run))}{check_html(self.check(index))}"
            "</section>"
            for index, (pane, label, run) in enumerate(zip(self.panes, self.labels,
                                                           self.shown_round, strict=False)))
        rows = self.table()
        table = table_html(list(rows[0]) if rows else [], (list(row.values()) for row in rows))
        timeline = table_html(["Pane", "Characters received (seconds: characters)"], (
            [name, ", ".join(f"{t:.2f}s: {n}" for t, n in points[:: max(1, len(points) // 20)])]
            for name, points in self.timelines().items()))
        parameters = parameters_html([
            Column(label, pane, self.digest(index), {"Repeats": str(self.repeats)})
            for index, (pane, label) in enumerate(zip(self.panes, self.labels, strict=True))])
        return report_page(
            f"PV LLM Studio comparison · {self.preset or 'custom prompt'}",
            f"{self.started_at:%Y-%m-%d %H:%M} UTC · {len(self.panes)} panes · "
            f"wall time {self.wall_summary()}",
            f"<h2>Prompts</h2>{prompts_html(self.system, self.prompt)}"
            f"<h2>Parameters</h2>{parameters}"
            f"<h2>Answers</h2><div class=panes>{columns}</div>"
            f"<h2>Measurements</h2>{table}"
            f"<h2>Definitions</h2>{definitions_html(definitions())}"
            f"<h2>Characters received over time</h2>{timeline}", wide=True)


class _Unavailable(Backend):
    """Stands in for a backend that could not be built: every call raises why, so the pane
    shows the error like any other run's."""

    name: ClassVar[str] = "unavailable"
    label: ClassVar[str] = "unavailable"
    default_model: ClassVar[str] = ""

    def __init__(self, error: BackendError) -> None:
        self.error = error
        self.model = ""

    def stream(self, *args: Any, **options: Any) -> TokenStream:
        raise self.error  # generate() reads stream(): it raises too

    def list_models(self) -> list[str]:
        raise self.error

    def context_fit(self, *args: Any, **options: Any) -> ContextFit:
        raise self.error

    def model_state(self) -> ModelState:
        raise self.error


def _shown(run: Run) -> str:
    """A run's answer as the report shows it: a structured one as its report, or (not
    valid) its raw text as code, with the reason."""
    if not run.request.structured:
        return run.text
    shown, verdict = shown_text(run.text, True, run.status)
    return shown if verdict is None or verdict.valid else f"{verdict.line}\n\n{shown}"


def _error_html(run: Run) -> str:
    """A failed run's error with its fix, escaped ('' for a run without one)."""
    if run.error is None:
        return ""
    return f"<p class=error><strong>Error:</strong> {html.escape(str(run.error))}</p>"


