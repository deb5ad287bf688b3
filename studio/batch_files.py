"""Batches beyond one machine: a batch as an OpenAI batch input file (JSONL), and the output
file of a batch runner brought back into the history.

The same file runs through vLLM's own batch runner on any node
(``python -m vllm.entrypoints.openai.run_batch -i batch.jsonl -o results.jsonl --model ...``),
a Ray Data LLM pipeline, or any OpenAI-compatible Batch API. Each input line is
``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}``; each output
line ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``
(vLLM's ``BatchRequestOutput``, the OpenAI Batch API's format). Output lines may come in any
order: they are matched to the input by ``custom_id``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from backends.base import DONE_LENGTH, GenerationStats
from backends.vllm_backend import VLLMBackend, chat_body
from studio.batch import BatchSpec
from studio.grounding import check
from studio.presets import load_locations
from studio.request import ERROR, FINISHED, LENGTH, RunRequest
from studio.store import RunStore

URL = "/v1/chat/completions"
IMPORT_KIND = "batch-import"  # the history group of an imported batch
# A batch file's size limit: .streamlit/config.toml's server.maxUploadSize (32 MB, where the
# reasoning is), which Streamlit enforces on every upload.
MAX_FILE_BYTES = 32 * 1024 * 1024


class BatchFileError(ValueError):
    """A batch file that cannot be read: the message says which line and why."""


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "row"


def custom_id(index: int, name: str) -> str:
    """Unique per row (the index), readable (the location): 'pv-0003-san-diego-ca'."""
    return f"pv-{index + 1:04d}-{_slug(name)}"


def request_body(request: RunRequest) -> dict[str, Any]:
    """The chat completion body of one row: what the Batch page sends vLLM."""
    return chat_body(request.model, request.prompt, request.system, request.max_tokens,
                     request.temperature, request.repeat_penalty, request.think)


def export_lines(spec: BatchSpec) -> Iterator[str]:
    """The batch as OpenAI batch input JSONL, a line per row."""
    for index, location in enumerate(spec.scenarios):
        line = {"custom_id": custom_id(index, location.name), "method": "POST", "url": URL,
                "body": request_body(spec.request(location))}
        yield json.dumps(line, ensure_ascii=False) + "\n"


def export_jsonl(spec: BatchSpec) -> str:
    return "".join(export_lines(spec))


@dataclass
class ImportedRow:
    custom_id: str
    request: RunRequest
    status: str = ERROR
    text: str = ""
    thinking: str = ""
    error: str = ""
    stats: GenerationStats = field(default_factory=GenerationStats)
    grounding: float | None = None
    run_id: int | None = None


@dataclass
class ImportedBatch:
    group_id: int | None
    rows: list[ImportedRow]
    missing: list[str]  # input rows the output file has no line for

    def table(self) -> list[dict[str, Any]]:
        return [{"custom_id": row.custom_id, "preset": row.request.preset,
                 "status": row.status, "output tokens": row.stats.output_tokens,
                 "prompt tokens": row.stats.prompt_tokens,
                 "grounding": None if row.grounding is None else round(row.grounding, 2),
                 "error": row.error} for row in self.rows]


def _json_lines(text: str, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BatchFileError(f"{what}, line {number}: not JSON ({exc.msg}).") from None
        if not isinstance(item, dict):
            raise BatchFileError(f"{what}, line {number}: not a JSON object.")
        yield number, item


def read_input(text: str) -> dict[str, RunRequest]:
    """The requests of a batch input file, by ``custom_id``."""
    presets = {_slug(location.name): location.name for location in load_locations()}
    requests: dict[str, RunRequest] = {}
    for number, item in _json_lines(text, "Batch input"):
        cid, body = item.get("custom_id"), item.get("body")
        if not isinstance(cid, str) or not cid or not isinstance(body, dict):
            raise BatchFileError(f"Batch input, line {number}: needs a custom_id and a body.")
        if cid in requests:
            raise BatchFileError(f"Batch input, line {number}: custom_id {cid!r} repeats.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BatchFileError(f"Batch input, line {number}: the body has no messages.")
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
            max_tokens=int(body.get("max_tokens") or 0),
            temperature=float(body.get("temperature") or 0.0),
            repeat_penalty=body.get("repetition_penalty"), think=str(think),
            system=system, prompt=prompt, preset=_preset(cid, presets))
    if not requests:
        raise BatchFileError("Batch input: the file has no requests.")
    return requests


def _preset(cid: str, presets: dict[str, str]) -> str:
    """The location a row's id names (ids made by ``custom_id``), for the history's preset."""
    match = re.fullmatch(r"pv-\d{4}-(.+)", cid)
    slug = match.group(1) if match else cid
    return presets.get(slug, slug)


def import_results(store: RunStore | None, input_text: str, output_text: str,
                   label: str = "", user: str = "") -> ImportedBatch:
    """Match the output lines to the input's requests and record each row in the history as a
    run of one new batch group (answers, token counts, errors); grounding checked per row."""
    requests = read_input(input_text)
    rows: dict[str, ImportedRow] = {}
    for number, item in _json_lines(output_text, "Batch output"):
        cid = item.get("custom_id")
        if cid not in requests:
            raise BatchFileError(f"Batch output, line {number}: custom_id {cid!r} is not in "
                                 "the batch input file. Are these the files of one batch?")
        rows[cid] = _row(cid, requests[cid], item)
    if not rows:
        raise BatchFileError("Batch output: the file has no results.")
    ordered = [rows[cid] for cid in requests if cid in rows]
    missing = [cid for cid in requests if cid not in rows]
    group_id = None
    if store is not None:
        group_id = store.create_group(IMPORT_KIND, json.dumps(
            {"label": label, "rows": len(requests), "results": len(ordered)}), user)
        for position, row in enumerate(ordered):
            row.run_id = store.start_run(row.request, "batch", group_id, position, user)
            store.finish_run(row.run_id, row.text, row.status, row.error or None,
                             row.stats, thinking=row.thinking)
    return ImportedBatch(group_id, ordered, missing)


def _row(cid: str, request: RunRequest, item: dict[str, Any]) -> ImportedRow:
    row = ImportedRow(cid, request)
    response = item.get("response") or {}
    body = response.get("body") if isinstance(response, dict) else None
    status_code = response.get("status_code") if isinstance(response, dict) else None
    if item.get("error") or not isinstance(body, dict) or status_code not in (None, 200):
        detail = item.get("error") or (body or {}).get("error") or body or "no response"
        row.error = f"HTTP {status_code}: {detail}" if status_code else str(detail)
        row.error = row.error[:2000]
        return row
    try:
        choice = body["choices"][0]
        message = choice.get("message") or {}
    except (KeyError, IndexError, TypeError, AttributeError):
        row.error = "The result has no choices."
        return row
    usage = body.get("usage") or {}
    row.text = str(message.get("content") or "").strip()
    row.thinking = str(message.get("reasoning") or message.get("reasoning_content") or "")
    reason = choice.get("finish_reason") or "stop"
    row.stats = GenerationStats(prompt_tokens=usage.get("prompt_tokens"),
                                output_tokens=usage.get("completion_tokens"),
                                done_reason=reason, fragments=1,
                                thinking_chars=len(row.thinking))
    row.status = LENGTH if reason == DONE_LENGTH else FINISHED
    row.grounding = check(row.text, request.prompt).score if row.text else None
    return row

