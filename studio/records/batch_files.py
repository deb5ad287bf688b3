"""Batches beyond one machine: a batch as an OpenAI batch input file (JSONL), and the output
file of a batch runner brought back into the history.

The same file runs through vLLM's own batch runner on any node
(``python -m vllm.entrypoints.openai.run_batch -i batch.jsonl -o results.jsonl --model ...``),
a Ray Data LLM pipeline, or any OpenAI-compatible Batch API. Each input line is
``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}``; each output
line ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``
(vLLM's ``BatchRequestOutput``, the OpenAI Batch API's format). Output lines may come in any
order: they are matched to the input by ``custom_id``.

An import is recorded as History runs marked imported, with the runner the output lines name
(``run_notes``); the same pair of files is imported once; a ``custom_id`` with more than one
result keeps one, said which and why (``Duplicate``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from backends.completion import CompletionShapeError, read_completion
from backends.sampling import Sampling
from backends.status import Status
from backends.stream import GenerationStats
from backends.vllm_backend import VLLMBackend, chat_body
from studio.pv.grounding import check
from studio.pv.library import load_locations
from studio.pv.structured import SCHEMA
from studio.records.render import dashes, stamp
from studio.records.store import Group, RunStore, StoredRun
from studio.runs.batch import BatchSpec
from studio.runs.request import IMPORTED_FROM, HoldsOutcome, Outcome, RunRequest, status_label
from studio.settings.config import Settings

URL = "/v1/chat/completions"
IMPORT_KIND = "batch-import"  # the history group of an imported batch
# A batch file's size limit: .streamlit/config.toml's server.maxUploadSize (32 MB, where the
# reasoning is), which Streamlit enforces on every upload.
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_IMPORT_ROWS = Settings.max_import_rows  # config.yaml's app.max_import_rows, by default
UTF8_FIX = "a batch runner writes UTF-8 JSON lines; is it the right file?"

# The runner an output line names by its "id": vLLM's run_batch writes "vllm-<uuid>", the
# OpenAI Batch API "batch_req_<id>"; a line without one (the README's Ray Data pipeline) or
# with another does not say.
RUNNERS = (("vllm-", "vLLM run_batch"), ("batch_req_", "OpenAI Batch API"))
UNNAMED_RUNNER = "batch runner not named in the file"


class BatchFileError(ValueError):
    """A batch file that cannot be read: the message says which file, which line and why."""


class AlreadyImported(BatchFileError):
    """The same batch input and results files were imported before (and their runs are
    still in the history): the message names that import."""

    def __init__(self, group: Group, runs: list[StoredRun]) -> None:
        self.group, self.runs = group, runs
        ids = sorted(run.id for run in runs)
        when = stamp(group.created_at)
        span = f"#{ids[0]}" if len(ids) == 1 else f"#{ids[0]}–#{ids[-1]}"
        super().__init__(
            f"These two files were imported already, on {when} UTC: History runs {span} "
            f"({len(ids):,} run{'s' if len(ids) != 1 else ''}, import #{group.id}). Nothing "
            "was imported again; open those runs in History (Open run by id), or delete them "
            "there to import the files anew.")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "row"


def custom_id(index: int, name: str) -> str:
    """Unique per row (the index), readable (the location): 'pv-0003-san-diego-ca'."""
    return f"pv-{index + 1:04d}-{_slug(name)}"


def request_body(request: RunRequest) -> dict[str, Any]:
    """The chat completion body of one row: what the Batch page sends vLLM (a structured
    batch's rows with the report's schema as ``response_format``)."""
    return chat_body(request.model, request.prompt, request.system, request.sampling,
                     SCHEMA if request.structured else None)


def export_lines(spec: BatchSpec) -> Iterator[str]:
    """The batch as OpenAI batch input JSONL, a line per row."""
    for index, location in enumerate(spec.scenarios):
        line = {"custom_id": custom_id(index, location.name), "method": "POST", "url": URL,
                "body": request_body(spec.request(location))}
        yield json.dumps(line, ensure_ascii=False) + "\n"


def export_jsonl(spec: BatchSpec) -> str:
    return "".join(export_lines(spec))


@dataclass
class ImportedRow(HoldsOutcome):
    """One result of a batch runner: the request it answered and what came of it, marked
    imported from the runner the line names."""

    custom_id: str
    request: RunRequest
    outcome: Outcome
    line: int = 0  # the results file's line it came from
    runner: str = UNNAMED_RUNNER
    grounding: float | None = None
    run_id: int | None = None

    @property
    def status(self) -> Status:
        return self.outcome.status

    @property
    def error(self) -> str:
        return self.outcome.error or ""

    @property
    def stats(self) -> GenerationStats:
        return self.outcome.stats


@dataclass(frozen=True)
class Duplicate:
    """A ``custom_id`` with more than one result line: the line kept, and why. An answer
    beats an error (a failed row run again, its output appended); between two answers or two
    errors the later line wins (the later run)."""

    custom_id: str
    kept: int
    dropped: tuple[int, ...]
    reason: str

    def __str__(self) -> str:
        lines = ", ".join(str(number) for number in self.dropped)
        return (f"{self.custom_id}: line {self.kept} kept ({self.reason}); "
                f"line{'s' if len(self.dropped) > 1 else ''} {lines} left out")


@dataclass
class ImportedBatch:
    group_id: int | None
    rows: list[ImportedRow]
    missing: list[str]  # input rows the output file has no line for
    duplicates: list[Duplicate] = field(default_factory=list)

    @property
    def runners(self) -> list[str]:
        """The runners the results file names, in order of appearance."""
        return list(dict.fromkeys(row.runner for row in self.rows))

    @property
    def run_ids(self) -> list[int]:
        return [row.run_id for row in self.rows if row.run_id is not None]

    def table(self) -> list[dict[str, Any]]:
        """The imported rows as the page shows them: statuses in the statistics' words, a
        dash for a missing figure."""
        return dashes([{
            "custom_id": row.custom_id, "line": row.line, "preset": row.request.preset,
            "status": status_label(row.status), "output tokens": row.stats.output_tokens,
            "prompt tokens": row.stats.prompt_tokens,
            "grounding": None if row.grounding is None else round(row.grounding, 2),
            "error": row.error} for row in self.rows])


def _json_lines(text: str, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BatchFileError(f"{what}, line {number}: not JSON ({exc.msg}).") from None
        except RecursionError:
            raise BatchFileError(f"{what}, line {number}: JSON nested too deeply to read (a "
                                 "batch line is one flat request or result).") from None
        if not isinstance(item, dict):
            raise BatchFileError(f"{what}, line {number}: not a JSON object.")
        yield number, item


def _named(role: str, name: str) -> str:
    """'Batch input (in.jsonl)': how messages name a file."""
    return f"{role} ({name})" if name else role


def _number(body: dict[str, Any], key: str, what: str, kind: type[int] | type[float],
            default: float | None) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BatchFileError(f"{what}: the body's {key} is not a number.")
    return kind(value)


def read_input(text: str, name: str = "") -> dict[str, RunRequest]:
    """The requests of a batch input file, by ``custom_id``."""
    what = _named("Batch input", name)
    presets = {_slug(location.name): location.name for location in load_locations()}
    requests: dict[str, RunRequest] = {}
    for number, item in _json_lines(text, what):
        at = f"{what}, line {number}"
        cid, body = item.get("custom_id"), item.get("body")
        if not isinstance(cid, str) or not cid or not isinstance(body, dict):
            raise BatchFileError(f"{at}: needs a custom_id and a body.")
        if cid in requests:
            raise BatchFileError(f"{at}: custom_id {cid!r} repeats.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BatchFileError(f"{at}: the body has no messages.")
        system = next((str(m.get("content", "")) for m in messages
                       if isinstance(m, dict) and m.get("role") == "system"), "")
        prompt = next((str(m.get("content", "")) for m in reversed(messages)
                       if isinstance(m, dict) and m.get("role") == "user"), "")
        kwargs = body.get("chat_template_kwargs") or {}
        think = ""
        if isinstance(kwargs, dict) and "enable_thinking" in kwargs:
            think = body.get("reasoning_effort") or ("on" if kwargs["enable_thinking"] else "off")
        requests[cid] = RunRequest(
            backend=VLLMBackend.name, host="", model=str(body.get("model") or ""),
            sampling=Sampling(
                max_tokens=_number(body, "max_tokens", at, int, 0),
                temperature=_number(body, "temperature", at, float, 0.0),
                repeat_penalty=_number(body, "repetition_penalty", at, float, None),
                think=str(think)),
            system=system, prompt=prompt, preset=_preset(cid, presets))
    if not requests:
        raise BatchFileError(f"{what}: the file has no requests.")
    return requests


def _preset(cid: str, presets: dict[str, str]) -> str:
    """The location a row's id names (ids made by ``custom_id``), for the history's preset."""
    match = re.fullmatch(r"pv-\d{4}-(.+)", cid)
    slug = match.group(1) if match else cid
    return presets.get(slug, slug)


def files_digest(input_text: str, output_text: str) -> str:
    """What identifies one import: the two files' contents."""
    return ":".join(hashlib.sha256(text.encode()).hexdigest()
                    for text in (input_text, output_text))


def earlier_import(store: RunStore, digest: str,
                   user: str = "") -> tuple[Group, list[StoredRun]] | None:
    """The import of the same two files by this user whose runs are still in the history."""
    for group in store.list_groups(IMPORT_KIND):
        try:
            summary = json.loads(group.summary)
        except ValueError:
            continue
        if isinstance(summary, dict) and summary.get("digest") == digest:
            runs = [run for run in store.group_runs(group.id) if run.user == user]
            if runs:
                return group, runs
    return None


def import_results(store: RunStore | None, input_text: str, output_text: str,
                   label: str = "", user: str = "", *, input_name: str = "",
                   output_name: str = "", max_rows: int = MAX_IMPORT_ROWS) -> ImportedBatch:
    """Match the output lines to the input's requests and record each row in the history as a
    run of one new batch group (answers, token counts, errors), marked imported with the
    runner the file names; grounding checked per row. Refused (``BatchFileError``, nothing
    recorded): a file that cannot be read, more than ``max_rows`` results, files imported
    before. ``input_name``/``output_name``: the files' names, for the messages."""
    what = _named("Batch output", output_name)
    results = sum(1 for line in output_text.splitlines() if line.strip())
    if results > max_rows:
        raise BatchFileError(
            f"{what}: {results:,} results; one import takes at most {max_rows:,}. Split the "
            f"file (split -l {max_rows} results.jsonl part-) and import each part with the "
            "same batch input file.")
    digest = files_digest(input_text, output_text)
    if store is not None and (earlier := earlier_import(store, digest, user)) is not None:
        raise AlreadyImported(*earlier)
    requests = read_input(input_text, input_name)
    found: dict[str, list[ImportedRow]] = {}
    for number, item in _json_lines(output_text, what):
        cid = item.get("custom_id")
        if not isinstance(cid, str) or cid not in requests:
            shown = repr(cid) if isinstance(cid, str) else "missing"
            raise BatchFileError(f"{what}, line {number}: custom_id {shown} is not in "
                                 "the batch input file. Are these the files of one batch?")
        found.setdefault(cid, []).append(_row(cid, requests[cid], item, number))
    if not found:
        raise BatchFileError(f"{what}: the file has no results.")
    rows: dict[str, ImportedRow] = {}
    duplicates: list[Duplicate] = []
    for cid, candidates in found.items():
        rows[cid], duplicate = _keep_one(cid, candidates)
        if duplicate is not None:
            duplicates.append(duplicate)
    ordered = [rows[cid] for cid in requests if cid in rows]
    missing = [cid for cid in requests if cid not in rows]
    group_id = None
    if store is not None:
        group_id = store.create_group(IMPORT_KIND, summary=json.dumps(
            {"label": label, "input": input_name, "output": output_name,
             "rows": len(requests), "results": len(ordered), "digest": digest,
             "runners": list(dict.fromkeys(row.runner for row in ordered))}), user=user)
        for position, row in enumerate(ordered):
            row.run_id = store.start_run(row.request, "batch", group_id, position, user)
            store.finish(row.run_id, row.outcome)
    return ImportedBatch(group_id, ordered, missing, duplicates)


def _keep_one(cid: str, candidates: list[ImportedRow]) -> tuple[ImportedRow, Duplicate | None]:
    """One result per row (see ``Duplicate``)."""
    if len(candidates) == 1:
        return candidates[0], None
    answers = [row for row in candidates if row.status != Status.ERROR]
    kept = (answers or candidates)[-1]
    if answers and len(answers) < len(candidates):
        reason = "an answer, not an error"
    else:
        reason = f"the later {'answer' if answers else 'error'}"
    dropped = tuple(row.line for row in candidates if row is not kept)
    return kept, Duplicate(cid, kept.line, dropped, reason)


def runner_of(item: dict[str, Any]) -> str:
    """The batch runner an output line names by its id (``RUNNERS``)."""
    line_id = item.get("id")
    if isinstance(line_id, str):
        for prefix, runner in RUNNERS:
            if line_id.startswith(prefix):
                return runner
    return UNNAMED_RUNNER


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _error_text(detail: Any) -> str:
    """The message of an error as runners write it: a string, {"message"}, or vLLM 0.32's
    ErrorResponse {"error": {"message", "type", "code"}}."""
    for _ in range(3):
        if not isinstance(detail, dict):
            break
        if isinstance(detail.get("message"), str):
            return str(detail["message"])
        if "error" not in detail:
            break
        detail = detail["error"]
    return str(detail)


def _row(cid: str, request: RunRequest, item: dict[str, Any], line: int) -> ImportedRow:
    """One output line as a row; a line of any shape is read (what it lacks is its error)."""
    runner = runner_of(item)

    def row(status: Status, text: str = "", thinking: str = "", error: str | None = None,
            stats: GenerationStats | None = None) -> ImportedRow:
        statistics = {**(stats or GenerationStats()).to_dict(), IMPORTED_FROM: runner}
        grounding = check(text, request.prompt).score if text else None
        return ImportedRow(cid, request, Outcome(status, text, thinking, error, statistics),
                           line, runner, grounding)

    response = _dict(item.get("response"))
    body, status_code = response.get("body"), response.get("status_code")
    if item.get("error") or not isinstance(body, dict) or status_code not in (None, 200):
        detail = _error_text(item.get("error") or _dict(body).get("error") or body
                             or "no response")
        return row(Status.ERROR,
                   error=(f"HTTP {status_code}: {detail}" if status_code else detail)[:2000])
    try:  # the reader a live run's answer goes through: its thinking split off the same way
        completion = read_completion(body)
    except CompletionShapeError as exc:
        return row(Status.ERROR, error=str(exc))
    stats = GenerationStats(prompt_tokens=completion.prompt_tokens,
                            output_tokens=completion.output_tokens,
                            done_reason=completion.finish_reason, fragments=1,
                            thinking_chars=len(completion.thinking),
                            thinking_tokens=completion.thinking_tokens)
    return row(Status.of_answer(completion.finish_reason), completion.text, completion.thinking,
               stats=stats)
