"""Batch: many PV scenarios through one backend, N at a time, resumable, with progress.

The seed's production job ran 30 locations one after another (~144 s each, 72 minutes).
Servers that batch requests (vLLM's continuous batching, Ollama with OLLAMA_NUM_PARALLEL)
finish the same work many times faster when requests arrive together, so a ``Batch`` keeps
``concurrency`` requests in flight (never more). Each row is recorded in the history as it
runs; a stopped or crashed batch resumes without redoing finished rows. A row that fails for
a passing reason (timeout, 5xx, 503 busy, a broken connection) is retried a bounded number of
times with backoff, then marked failed with its error; the batch goes on.
"""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any, Self

from backends.base import Backend
from backends.errors import BackendConnectionError, BackendError, BackendStatusError, StreamError
from backends.http import redact
from backends.sampling import Sampling
from backends.status import Status
from studio.pv.checks import AnswerCheck, check_html, check_run
from studio.pv.figures import FigureReport
from studio.pv.location import Location
from studio.pv.prompt import SEED_ORDER, STATIC_FIRST, build_user_prompt
from studio.pv.structured import Verdict, shown_text, valid_share
from studio.pv.structured import check as check_structured
from studio.pv.structured import counted as counted_structured
from studio.records.render import dashes, html_document, markdown_with_thinking
from studio.records.spreadsheet import csv_text
from studio.records.store import GroupSummary, RunStore, StoredRun
from studio.runs.capacity import Capacity
from studio.runs.connection import ProbeCache
from studio.runs.job import Job, LiveJobs
from studio.runs.request import (
    ANSWERED,
    AnswerFormat,
    HoldsOutcome,
    Outcome,
    RunParams,
    RunRequest,
    flat_dict,
    status_label,
)
from studio.runs.runner import Recording, Run

# An earlier batch of the history that can be resumed (earlier_state): its process ended
# while it ran, it was stopped with rows never run, or every row ran and some failed.
RESUMABLE = (Status.INTERRUPTED, Status.STOPPED, Status.ENDED)
OVER_WINDOW = "over the context window (flagged before the start)"
IN_FLIGHT = (Status.RUNNING, Status.RETRYING)
MAX_CONCURRENCY = 64
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
CACHE_READ_EVERY_S = 2.0  # /metrics is read at most this often while the page repaints


@dataclass(frozen=True)
class PrefixCacheUse:
    """Prompt tokens the server looked up in its prefix cache during a batch, and found."""

    queries: float
    hits: float

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.queries if self.queries > 0 else None

    def __str__(self) -> str:
        rate = self.hit_rate
        if rate is None:
            return "prefix cache: no data yet"
        return (f"{rate:.0%} of {self.queries:,.0f} prompt tokens came from the server's "
                "prefix cache")


@dataclass(frozen=True, kw_only=True)
class BatchSpec(RunParams):
    """What a batch is: the run parameters, the system prompt and the scenarios; kept with
    its history group so that it can be resumed."""

    scenarios: list[Location]
    system: str
    concurrency: int = 1
    layout: str = STATIC_FIRST  # the user prompt's section order (studio.pv.prompt.LAYOUTS)
    # Rows run although the window check said they do not fit: flagged OVER_WINDOW, kept
    # with the definition so that a resumed batch still flags them.
    over_window: tuple[int, ...] = ()

    def to_json(self) -> str:
        """The definition as stored with its history group: the host without credentials
        (nothing secret is written; ``with_host`` puts them back on resume)."""
        return json.dumps({**flat_dict(self), "host": redact(self.host)})

    def with_host(self, host: str) -> BatchSpec:
        """This spec with ``host`` when it is the same server (credentials aside): a stored
        spec resumed with the credentials the sidebar holds now."""
        return replace(self, host=host) if redact(host) == redact(self.host) else self

    @classmethod
    def from_json(cls, text: str) -> BatchSpec:
        data = json.loads(text)
        data["scenarios"] = [Location(**row) for row in data["scenarios"]]
        data.setdefault("layout", SEED_ORDER)  # batches stored before layouts had the seed's
        # Batches stored before answer formats asked for the markdown report.
        data["answer_format"] = AnswerFormat(data.get("answer_format") or AnswerFormat.MARKDOWN)
        data["over_window"] = tuple(data.get("over_window", ()))
        sampling = Sampling.from_dict(data)
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known},
                   sampling=sampling)

    def flag(self, rows: Iterable[int]) -> BatchSpec:
        """This spec with ``rows`` (indexes) flagged as run over the context window too."""
        return replace(self, over_window=tuple(sorted({*self.over_window, *rows})))

    def request(self, location: Location) -> RunRequest:
        return RunRequest(**self.param_fields(), system=self.system,
                          prompt=build_user_prompt(location, layout=self.layout),
                          preset=location.name, location=location)


@dataclass
class BatchRow(HoldsOutcome):
    """One scenario of a batch: its request, where it stands (its last run's status, or the
    row's own: pending, running, retrying, failed), and the outcome of its last run (this
    session's, or an earlier session's when ``resumed``)."""

    index: int
    location: Location
    request: RunRequest
    status: Status = Status.PENDING
    attempts: int = 0
    error: str = ""  # why its last attempt failed
    flags: tuple[str, ...] = ()  # marks from before the start (run over the context window)
    outcome: Outcome = field(default_factory=Outcome)
    check: AnswerCheck | None = field(default=None, repr=False)  # of the outcome's text
    resumed: bool = False  # finished in an earlier session of this batch
    started_at: datetime | None = None  # when its last run started (the serving figures')
    run: Run | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.status in (*ANSWERED, Status.FAILED, Status.STOPPED)

    def take(self, outcome: Outcome) -> None:
        """The outcome of a run of this row, graded against its prompt (unless the server
        cut the prompt)."""
        check = check_run(outcome.text, self.request, outcome.statistics)
        self.outcome, self.check = outcome, check  # graded first: a page reads both

    @property
    def seconds(self) -> float | None:
        return self.outcome.stats.total_time_s

    @property
    def output_tokens(self) -> int | None:
        return self.outcome.stats.output_tokens

    @property
    def thinking_s(self) -> float | None:
        return self.outcome.stats.thinking_s

    # One column per meaning, named as the History CSV names them: the app's measure, and
    # the server's own figure (Ollama reports one, vLLM none).
    @property
    def client_tokens_per_s(self) -> float | None:
        return self.outcome.stats.client_tokens_per_s

    @property
    def server_tokens_per_s(self) -> float | None:
        return self.outcome.stats.server_tokens_per_s

    @property
    def grounding(self) -> float | None:
        return self.check.grounding.score if self.check is not None else None

    @property
    def figures_right(self) -> str | None:
        """The figure check's "5 of 7"; None without an answer, or when not graded."""
        return (self.check.figures.score or None) if self.check is not None else None

    @property
    def verdict(self) -> Verdict | None:
        """A structured answer's check, once the row has ended (None: a markdown answer, or
        a row still to run)."""
        if not self.request.structured or self.status not in (*ANSWERED, Status.STOPPED,
                                                               Status.FAILED) \
                or not counted_structured(self.outcome.text, self.outcome.status):
            return None
        return check_structured(self.outcome.text, self.outcome.status)

    @property
    def structured(self) -> str | None:
        """'valid', or why a structured answer is not (None for a markdown one)."""
        verdict = self.verdict
        return None if verdict is None else ("valid" if verdict.valid else verdict.problem)

    @property
    def not_graded(self) -> str:
        """Why the answer was not graded (a prompt the server cut); '' when it was."""
        return (self.check.grounding.not_graded or "") if self.check is not None else ""

    @property
    def notes(self) -> str:
        """A prompt the server cut, a cold start; or flagged before the start."""
        return "; ".join([*self.outcome.notes, *self.flags])


def is_retryable(error: BackendError | None) -> bool:
    """A passing failure worth another try: no answer in time, a broken connection, a busy or
    failing server. A missing model or a bad request will fail the same way again."""
    if isinstance(error, StreamError):
        return True
    if isinstance(error, BackendStatusError):
        return error.status_code in RETRYABLE_STATUS
    return isinstance(error, BackendConnectionError)


class Batch(Job):
    """``Batch(spec, build=...).start()``; poll ``rows``/``progress()``; ``stop()``."""

    name = "batch"

    def __init__(self, spec: BatchSpec, *, build: Callable[[], Backend],
                 recording: Callable[[int], Recording | None] | None = None,
                 finished_before: Mapping[int, StoredRun] | None = None,
                 attempts_before: Mapping[int, int] | None = None, max_retries: int = 2,
                 backoff_s: float = 1.0, group_id: int | None = None,
                 on_end: Callable[[], None] | None = None, capacity: Capacity | None = None,
                 probes: ProbeCache | None = None) -> None:
        """``recording(row_index)`` says where each attempt is recorded; ``finished_before``
        maps row indexes already done in an earlier session to their stored runs, and
        ``attempts_before`` counts the attempts recorded for each row. ``on_end`` runs once
        when the batch's work ends (``launch`` releases the history group there).
        ``capacity`` and ``probes`` are the process's, for every row's run (``Run``)."""
        super().__init__()
        self.spec = spec
        self.concurrency = max(1, min(spec.concurrency, MAX_CONCURRENCY))
        self.group_id = group_id
        self.rows = [BatchRow(index, location, spec.request(location),
                              flags=(OVER_WINDOW,) if index in spec.over_window else ())
                     for index, location in enumerate(spec.scenarios)]
        for index, stored in (finished_before or {}).items():
            if index < len(self.rows):
                row = self.rows[index]
                row.take(stored.outcome)
                row.status, row.resumed = stored.status, True
                row.started_at = datetime.fromisoformat(stored.created_at)
        for index, attempts in (attempts_before or {}).items():
            if index < len(self.rows):
                self.rows[index].attempts = attempts
        self.max_retries, self.backoff_s = max_retries, backoff_s
        self._build, self._recording, self._on_end = build, recording, on_end
        self._capacity, self._probes = capacity, probes
        self._lock = threading.Lock()
        self._in_flight = 0
        self.max_in_flight = 0  # the most requests seen at once (never above concurrency)
        self.started: float | None = None
        self.ended: float | None = None
        self._cache: Backend | None = None  # the backend asked for its prefix cache
        self._cache_before: tuple[float, float] | None = None
        self._cache_use: PrefixCacheUse | None = None
        self._cache_read_at = 0.0

    def start(self) -> Self:
        self.started = time.monotonic()
        return super().start()

    def _cancel(self) -> None:
        """Stop: cancel the rows in flight; finished rows stay."""
        for row in self.rows:
            if row.run is not None and not row.run.done:
                row.run.stop()

    def _work(self) -> None:
        try:
            backend = self._build()
        except BackendError as exc:
            for row in self.rows:
                if not row.done:
                    row.status, row.error = Status.FAILED, str(exc)
            return
        self._cache = backend
        self._cache_before = self._cache_counters()  # None: its server does not count
        todo = [row for row in self.rows if not row.done]
        with ThreadPoolExecutor(max_workers=self.concurrency,
                                thread_name_prefix="batch-row") as pool:
            for row in todo:
                pool.submit(self._run_row, backend, row)

    def _finished(self) -> None:
        self.ended = time.monotonic()
        self.prefix_cache(fresh=True)  # the batch's final figure, read once more
        if self._on_end is not None:
            self._on_end()

    def _run_row(self, backend: Backend, row: BatchRow) -> None:
        for attempt in range(self.max_retries + 1):
            if self._stop.is_set():
                row.status = Status.STOPPED
                return
            row.attempts, row.status = row.attempts + 1, Status.RUNNING
            recording = self._recording(row.index) if self._recording else None
            with self._lock:
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                row.run = Run(backend, row.request, recording, self._capacity,
                              self._probes).start()
                row.started_at = row.run.started_at
                if self._stop.is_set():  # Stop came while this row was starting
                    row.run.stop()
                row.run.wait()
            finally:
                with self._lock:
                    self._in_flight -= 1
            run = row.run
            row.take(run.outcome)
            row.status = run.status
            if run.status in ANSWERED:
                row.error = ""
            if run.status in ANSWERED or run.status == Status.STOPPED:
                return
            row.error = str(run.error) if run.error else "failed"
            if attempt == self.max_retries or not is_retryable(run.error):
                row.status = Status.FAILED
                return
            # Back off before the retry (1 s, 2 s, ...), but let Stop cut the wait short.
            row.status = Status.RETRYING
            if self._stop.wait(self.backoff_s * 2 ** attempt):
                row.status = Status.STOPPED
                return

    def _cache_counters(self) -> tuple[float, float] | None:
        try:
            return self._cache.prefix_cache_counters() if self._cache is not None else None
        except (BackendError, ValueError):
            return None

    def prefix_cache(self, fresh: bool = False) -> PrefixCacheUse | None:
        """The server's prefix-cache use since the batch started (vLLM's counters, which
        also count any other client's requests meanwhile); None where not reported."""
        if self._cache_before is None:
            return None
        now = time.monotonic()
        if (fresh or now - self._cache_read_at >= CACHE_READ_EVERY_S) and (
                self.ended is None or fresh):
            self._cache_read_at = now
            after = self._cache_counters()
            if after is not None:
                self._cache_use = PrefixCacheUse(after[0] - self._cache_before[0],
                                                 after[1] - self._cache_before[1])
        return self._cache_use

    # -- progress and results ---------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        """done / failed / running / remaining counts and an estimate of the time left."""
        done = sum(row.status in ANSWERED for row in self.rows)
        failed = sum(row.status == Status.FAILED for row in self.rows)
        running = sum(row.status in IN_FLIGHT for row in self.rows)
        stopped = sum(row.status == Status.STOPPED for row in self.rows)
        remaining = len(self.rows) - done - failed - running - stopped  # not started yet
        eta = None
        fresh = [row for row in self.rows if row.status in ANSWERED and not row.resumed]
        if fresh and self.started is not None and remaining + running and not (
                self.done or self.stopped):
            elapsed = time.monotonic() - self.started
            eta = elapsed / len(fresh) * (remaining + running)  # this session's pace so far
        return {"total": len(self.rows), "done": done, "failed": failed, "running": running,
                "remaining": remaining, "stopped": stopped, "eta_s": eta,
                "resumed": sum(row.resumed for row in self.rows),
                "fraction": (done + failed) / len(self.rows) if self.rows else 1.0}

    def summary(self) -> dict[str, Any]:
        """Wall time, sum of row times, speedup (sum / wall), throughput, failures."""
        fresh = [row for row in self.rows if row.status in ANSWERED and not row.resumed]
        wall = ((self.ended or time.monotonic()) - self.started) if self.started else None
        row_sum = sum(row.seconds or 0.0 for row in fresh)
        tokens = sum(row.output_tokens or 0 for row in fresh)
        return {"wall_s": wall, "sum_row_s": row_sum,
                "speedup": row_sum / wall if wall else None,
                "throughput_tokens_per_s": tokens / wall if wall else None,
                "output_tokens": tokens, "rows": len(self.rows), "finished_now": len(fresh),
                "resumed": sum(row.resumed for row in self.rows),
                "failed": sum(row.status == Status.FAILED for row in self.rows),
                "max_in_flight": self.max_in_flight, "concurrency": self.concurrency}

    def progress_line(self) -> str:
        """'30 done (8 before the resume) · 0 failed · 0 running · 0 waiting · about 4 s
        left': the progress bar's text (the prefix cache's figure aside)."""
        figures = self.progress()
        resumed = f" ({figures['resumed']} before the resume)" if figures["resumed"] else ""
        stopped = f" · {figures['stopped']} stopped" if figures["stopped"] else ""
        eta = f" · about {figures['eta_s']:.0f} s left" if figures["eta_s"] else ""
        return (f"{figures['done']} done{resumed} · {figures['failed']} failed{stopped} · "
                f"{figures['running']} running · {figures['remaining']} waiting{eta}")

    def failures(self) -> str | None:
        """What the failed rows come to, said apart from the progress bar (which counts the
        rows that ended, failed or not); None when no row failed."""
        figures = self.progress()
        failed, total = figures["failed"], figures["total"]
        if not failed:
            return None
        if failed == total:
            return (f"All {total} rows failed" if total > 1 else "The only row failed") + (
                ": the table's error column says why.")
        return (f"{failed} of {total} row{'s' if total != 1 else ''} failed: the table's "
                "error column says why.")

    def coverage(self) -> str | None:
        """What the summary's figures cover, when not the whole batch (after a resume)."""
        summary = self.summary()
        if not summary["resumed"]:
            return None
        now, before = summary["finished_now"], summary["resumed"]
        return (f"Resumed batch: wall time, sum of row times, speedup and throughput are this "
                f"session's, over the {now} row{'s' if now != 1 else ''} answered since the "
                f"resume; the {before} row{'s' if before != 1 else ''} answered before it "
                "count in “done” only.")

    def table(self) -> list[dict[str, Any]]:
        """The rows as the CSV has them: machine values (status "length"), None for a
        figure that is missing."""
        return [{"#": row.index + 1, "location": row.location.name, "status": row.status,
                 "attempts": row.attempts, "time s": _rounded(row.seconds),
                 "thinking s": _rounded(row.thinking_s), "output tokens": row.output_tokens,
                 "client_tokens_per_s": _rounded(row.client_tokens_per_s),
                 "server_tokens_per_s": _rounded(row.server_tokens_per_s),
                 "figures_right": row.figures_right,
                 "grounding": row.not_graded or _rounded(row.grounding),
                 "structured": row.structured, "notes": row.notes, "error": row.error}
                for row in self.rows]

    def page_table(self) -> list[dict[str, Any]]:
        """The rows as the page shows them: the statuses in the statistics' words ("Hit max
        tokens"), a dash for a missing figure, and no column that no row has a figure in
        (thinking time without a reasoning model, the server's tokens/s from vLLM)."""
        return dashes([{**row, "status": status_label(row["status"])}
                       for row in self.table()],
                      optional=("thinking s", "server_tokens_per_s", "structured"))

    def valid_share(self) -> str:
        """'valid structured: 4 of 5' over the rows that ended ('' for a markdown batch)."""
        return valid_share([v for row in self.rows if (v := row.verdict) is not None])

    def to_csv(self) -> str:
        """The table with the figure check per quantity, safe to open in a spreadsheet (no
        cell is read as a formula)."""
        # After the table's columns ("figures_right" among them); a row without an answer
        # has an empty report: blank cells.
        table = [{**row, **{key: value for key, value in
                            (r.check.figures if r.check else FigureReport()).columns().items()
                            if key not in row}}
                 for row, r in zip(self.table(), self.rows, strict=True)]
        header = list(table[0]) if table else []
        return csv_text(header, ([row[name] for name in header] for row in table))

    def to_zip(self) -> bytes:
        """One Markdown and one sanitized HTML answer per location, plus the CSV."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("batch.csv", self.to_csv())
            for row in self.rows:
                if not (row.text or row.thinking):
                    continue
                stem = f"{row.index + 1:02d}-{_slug(row.location.name)}"
                # A structured answer as its report (not valid: its raw text as code).
                text = shown_text(row.text, True, row.outcome.status)[0] \
                    if row.request.structured else row.text
                archive.writestr(f"{stem}.md", markdown_with_thinking(text, row.thinking))
                archive.writestr(f"{stem}.html", html_document(
                    text, f"PV recommendation: {row.location.name}",
                    f"{self.spec.backend} · {self.spec.model} · {row.status}", row.thinking,
                    check_html(row.check)))
        return buffer.getvalue()


class BatchRunning(RuntimeError):
    """The batch is being worked on by a live process: watch or stop it, do not resume it."""


# The batches this process works on, by history group (``studio.process`` holds the one).
LiveBatches = LiveJobs[Batch]


def earlier_rows(store: RunStore, group_id: int) -> tuple[dict[int, StoredRun], Counter[int]]:
    """A recorded batch's rows so far: the answered ones by position, and the attempts made
    at each position."""
    earlier = store.group_runs(group_id)
    attempts = Counter(run.position for run in earlier)
    return {run.position: run for run in earlier if run.status in ANSWERED}, attempts


def earlier_state(summary: GroupSummary) -> Status:
    """How a recorded batch stands (``group_state``)."""
    return group_state(summary, len(BatchSpec.from_json(summary.group.spec).scenarios))


def group_state(summary: GroupSummary, rows: int) -> Status:
    """How a recorded group of ``rows`` positions stands: RUNNING (a live worker has it:
    watch it), COMPLETE (every row answered), INTERRUPTED (its process ended while it ran),
    STOPPED (rows never ran) or ENDED (every row ran, some failed). The last three can be
    resumed."""
    if summary.running:
        return Status.RUNNING
    if summary.done >= rows:
        return Status.COMPLETE
    if summary.interrupted:
        return Status.INTERRUPTED
    return Status.STOPPED if summary.done + summary.failed < rows else Status.ENDED


def launch(spec: BatchSpec, *, build: Callable[[], Backend], store: RunStore | None,
           group_id: int | None = None, user: str = "", live: LiveBatches | None = None,
           capacity: Capacity | None = None, probes: ProbeCache | None = None) -> Batch:
    """Start a batch, recorded in a new history group, or resume the one recorded as
    ``group_id`` (its finished rows are kept, not run again; ``spec`` is its definition,
    with the rows flagged now). The group is claimed for this process first: a batch that a
    live worker still runs raises ``BatchRunning`` instead of running its rows twice. While it
    runs it is in ``live`` (the process's ``LiveBatches``: other sessions watch it there);
    ``capacity`` and ``probes`` are the process's too, for its rows' runs."""
    finished: dict[int, StoredRun] = {}
    attempts: Counter[int] = Counter()
    if store is not None:
        if group_id is None:
            group_id = store.create_group("batch", spec=spec.to_json(), user=user)
        else:
            finished, attempts = earlier_rows(store, group_id)
        if not store.claim_group(group_id):
            raise BatchRunning(f"Batch #{group_id} is running in another session or app "
                               "process: watch or stop it there; resume it once it stopped.")
        store.set_group_spec(group_id, spec.to_json())  # a resume may flag more rows

    def ended() -> None:
        if group_id is not None:
            if live is not None:
                live.remove(group_id)
            if store is not None:
                store.release_group(group_id)

    recording = (lambda index: Recording(store, "batch", group_id, index, user)) \
        if store is not None else None
    batch = Batch(spec, build=build, recording=recording, finished_before=finished,
                  attempts_before=attempts, group_id=group_id, on_end=ended,
                  capacity=capacity, probes=probes)
    if group_id is not None and live is not None:
        live.add(group_id, batch)
    return batch.start()


def _rounded(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").lower()[:40]
