"""A test server that behaves like Ollama on the wire (../shared/reference/wire-protocols.md).

Threaded HTTP/1.1, chunked transfer encoding, one flushed NDJSON line per token, Go-style
escaping, integer-nanosecond durations, and Ollama's error shapes. A ``Script`` says how the
next chat answers: tokens, pace, and the failure to stage (error status, error line
mid-stream, dropped connection, malformed line...). The server records what it was asked and
notices when a client hangs up mid-stream, which is how tests see that Stop really cancels.

Context windows and the model lifecycle follow the ollama/ollama source (paths below; the
fake tokenizer is tests/servers/tokens.py):

- Window: ``min(options.num_ctx or default, trained length)``; the default is 2048 up to
  v0.6.6 and 4096 after (a CPU-only host from v0.15.5 also gets 4096); ``default_num_ctx``
  plays ``OLLAMA_CONTEXT_LENGTH`` (envconfig/config.go, server/sched.go ``effectiveContext``).
- Too long a prompt, first the messages (server/prompt.go ``chatPrompt``): before v0.15.5
  the oldest messages go first and, quirk included, a system message is dropped with them
  (for [system, user] only the user message is left); from v0.15.5 system messages stay.
- Then the tokens. Before v0.30 (runner/ollamarunner/runner.go ``NewSequence``): over
  ``num_ctx`` tokens, keep the first ``num_keep`` (4) and the last ``num_ctx - num_keep``, so
  exactly ``num_ctx`` remain; ``"truncate": false`` (v0.12.6+) answers 400 "the input length
  exceeds the context length" instead. From v0.30 (llm/llama_server.go
  ``completionPromptForRequest``) the cut starts at ``num_ctx - 1`` tokens: v0.30.0-0.30.8
  keep ``num_ctx - 1``; from v0.30.9 a model without context shift answers 400 "the prompt is
  longer than the context length currently available..."; from v0.30.11 a cut keeps
  ``num_ctx - max((num_ctx - n_keep) // 2, 1)`` tokens, ``n_keep = num_keep + 1`` (the BOS,
  which this tokenizer adds). The answer is HTTP 200 and ``prompt_eval_count`` is the number
  of tokens kept; nothing else says the prompt was cut. ``server.cuts`` records each cut.
- Loading (server/sched.go, server/routes.go): a chat for a model that is not loaded, or is
  loaded with another window, loads it (``reload_delay`` seconds); ``load_duration`` is the
  time from the request to the model being ready (as routes.go measures it), ~2 ms when it
  was already loaded. ``keep_alive`` ("5m", seconds, negative = forever, 0 = unload after
  the answer) sets ``expires_at`` in ``/api/ps``. An empty ``messages`` list loads the model
  (``done_reason: "load"``), or with ``keep_alive: 0`` unloads it (``"unload"``).
- How many models stay loaded (``max_loaded``, Ollama's ``OLLAMA_MAX_LOADED_MODELS``;
  server/sched.go ``processPending`` and ``findRunnerToUnload``): None (the default) keeps
  every model loaded. With a number, loading one more model when that many are loaded first
  unloads an idle one (no chat using it), or waits until one is idle, as the scheduler does
  ("max runners achieved, unloading one to make room"); every other chat waits meanwhile
  (one load at a time). Ollama unloads the idle runner with the shortest keep_alive, the
  order among equal ones left to Go's map; here, among equal keep_alives, the least recently
  used. ``server.evictions`` records each model unloaded to make room. Two models taking
  turns on ``max_loaded=1`` load once each; alternating, they load at every switch.
- ``/api/pull`` (server/images.go ``PullModel``, server/download.go, server/routes.go
  ``PullHandler``/``streamResponse``/``waitForStream``), ``/api/show``, ``/api/ps``,
  ``/api/version``.

Thinking follows server/routes.go ``ChatHandler``, api/types.go ``ThinkValue`` and
thinking/parser.go, tag by tag (v0.9.0 #10584 ... v0.33.0-rc2); ``think_plan`` decides:

- ``think`` arrived in v0.9.0 as ``*bool`` ("Needs to be a pointer so we can distinguish
  between false (request that thinking _not_ be used) and unset (use the old behavior before
  this option was introduced)"); before v0.9.0 it is an unknown field, ignored. v0.9.0-0.10.x:
  a string fails the binding, 400 ``json: cannot unmarshal string into Go struct field
  ChatRequest.think of type bool``. From v0.11.0 (gpt-oss) ``ThinkValue`` is a bool or
  "high"/"medium"/"low" ("max" from v0.22.0, #15787); another string is 400 ``invalid think
  value: "x" (must be "high", "medium", "low", true, or false)``. JSON null = omitted.
- Whether the model thinks: ``think`` true or a level -> on (``message.thinking``); false ->
  off; omitted -> on from v0.12.4 (#12533: "if req.Think == nil { req.Think =
  &api.ThinkValue{Value: true} }" for a model with the "thinking" capability), before that the
  old behaviour: no parser, the template's raw output, so ``<think>...</think>`` stays inline
  in ``content``. gpt-oss always goes through the harmony parser, whatever ``think`` says
  (docs/capabilities/thinking.mdx: "Passing `true`/`false` is ignored for that model").
  "thinking" in ``capabilities`` (/api/show) is what makes a model think here, on every
  version (real servers list the capability only from v0.9.0).
- A model without the capability: v0.9.0-0.12.3, ``think`` true (or a level) fails
  scheduleRunner's capability check, 400 ``registry.ollama.ai/library/llama3.1:8b does not
  support thinking`` (``fmt.Errorf("%s %w", name, err)``, the full name; qwen3-family and
  deepseek-r1 models get ". Pull the model again to get the latest version with full
  thinking support" appended); v0.12.4 does the same for any ``think``, false included (its
  bug; #12555 fixed it in v0.12.5); from v0.12.5 true or a level is 400 ``"llama3.1:8b" does
  not support thinking`` (``%q`` of the name as sent). Both come before the model loads.
- A level on a thinking model other than gpt-oss: v0.11.0-0.17.6 answer 400 ``think value
  "high" is not supported for this model`` once the model is loaded and the prompt built;
  from v0.17.7 (#14625) a level is just "on".
- The model generates ``<think>``, ``Script.thinking``, ``</think>`` (one token each), then
  ``Script.tokens``. With thinking on, that goes through thinking/parser.go: whitespace after
  each tag is eaten, a line goes out only when it holds thinking or content, so each thinking
  token is its own line ``{"model":..,"created_at":..,"message":{"role":"assistant",
  "content":"","thinking":"<token>"},"done":false}`` (``content`` has no omitempty,
  ``thinking`` has), all before the content lines; the done line and the non-streaming body
  hold ``thinking`` only when there is some. ``eval_count`` is every token generated, tags
  and thinking included: the runner counts ``numPredicted`` before the server parses
  anything, and ``num_predict`` cuts the same count (thinking uses it up; ``done_reason``
  "length"). ``delay``, ``gate`` and the ``*_after`` counts go by lines, thinking ones too.
- ``server.think_requests`` records each chat's ``think`` (``OMITTED`` when absent or null).

``format`` (structured answers; ``format_plan``, evaluation notes section 1): ``"json"``
gives any JSON on every version; a schema object is refused before v0.5.0 (HTTP 400, Go's
binding error: the field was a string; another string is ignored), followed from v0.5.0 (its
properties in key order until v0.5.2, #8002), a bad value only logged (free text) until
v0.5.3, then HTTP 500 ``invalid format: ...`` / ``invalid JSON schema in format``. The JSON
that a schema makes (``Script.structured``, or one made from the schema:
tests/servers/structured.py) streams in pieces in ``message.content``, and ``num_predict``
cuts it like any answer. ``server.formats`` records each chat's ``format``.

Where this fake differs from the source, knowingly: real pull progress lines come from a
60 ms ticker (server/download.go ``Wait``), so a layer's last line may stop short of
``completed == total``; here each layer ends on ``completed == total``. The real pull also
fetches the config blob as a last layer: list it among the ``pullable`` sizes if it matters.
A client that hangs up while its model loads leaves the model unloaded here. From v0.30,
``"truncate": false`` passes llama-server's own error body through (its wording is from the
llama.cpp server, not checked against a real one). Real models also generate newlines
around the tags (qwen3: ``<think>\n...\n</think>\n\n``) and gpt-oss uses harmony channels
rather than ``<think>``; here the tags are bare, so ``eval_count`` is thinking + content + 2.

Run it by hand for a demo: ``python -m tests.servers.ollama --port 11434 --delay 0.05``
(``--help`` for the context, loading and pull options); a thinking model:
``--models qwen3:8b --capabilities qwen3:8b=completion,thinking --version 0.12.4
--thinking "Let me size the array first."``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import select
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.servers import structured
from tests.servers.base import LocalServer
from tests.servers.tokens import BOS_TOKENS, prompt_tokens
from tests.servers.tokens import chat_messages as chat_messages
from tests.servers.tokens import count_tokens as count_tokens

SAMPLE_ANSWER = """## RECOMMENDATION FOR PV PANEL INSTALLATION

### KEY TRENDS AND SEASONAL PATTERNS
*   Average daily consumption: 53.76 kWh
*   Peak weekly max load: 7.79 kW

### PAYBACK PERIOD AND ROI
*   Break-even: ~10.03 years (budget-constrained)
"""

DEFAULT_VERSION = "0.12.3"
TRAINED_CONTEXT = 131072
NUM_KEEP = 4  # api.DefaultOptions
LOADED_NS = 2_048_917  # load_duration of a model that was already loaded (~2 ms)
LOAD_OVERHEAD_NS = 1_000_000  # added to the measured wait of a load
PROMPT_EVAL_NS = 24_573_166
KEEP_ALIVE_S = 300.0  # 5m
FOREVER = timedelta(microseconds=(2**63 - 1) // 1000)  # Go's time.Duration(math.MaxInt64)
MODEL_SIZE = 4920734272
KV_BYTES_PER_TOKEN = 131072  # Llama 3.1 8B, f16 cache: 32 layers x 8 KV heads x 128 x 2 x 2
PARAMETER_COUNT = 8030261248

INPUT_TOO_LONG = "the input length exceeds the context length"
PROMPT_TOO_LONG = ("the prompt is longer than the context length currently available to the "
                   "model; shorten the prompt, adjust the context length in settings, or use "
                   "a model with a longer context length")
PULL_NOT_FOUND = "pull model manifest: file does not exist"

_ARCHITECTURES = {"qwen3": "qwen3", "qwen2": "qwen2", "gemma3": "gemma3", "gemma2": "gemma2",
                  "phi3": "phi3", "gpt-oss": "gptoss", "deepseek-r1": "qwen2"}


def tokenize(text: str) -> list[str]:
    """Split text into word-sized tokens that join back to exactly the text (the answer's
    streamed pieces; prompt lengths use tests.servers.tokens)."""
    return re.findall(r"\s*\S+|\s+", text)


def parse_version(version: str) -> tuple[int, int, int]:
    """``"0.12.3"``, ``"v0.30.0-rc2"`` -> (0, 12, 3), (0, 30, 0)."""
    major, minor, patch, *_ = [int(n) for n in re.findall(r"\d+", version.split("-")[0])] + [0] * 3
    return major, minor, patch


def default_context(version: str) -> int:
    """The num_ctx a request without one gets: 2048 up to v0.6.6, then 4096."""
    return 2048 if parse_version(version) <= (0, 6, 6) else 4096


def architecture(model: str) -> str:
    """The GGUF architecture the model's keys are named after (``<arch>.context_length``)."""
    base = model.split("/")[-1].split(":")[0].lower()
    for prefix, arch in _ARCHITECTURES.items():
        if base.startswith(prefix):
            return arch
    return "llama"


_GO_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: Any) -> float | None:
    """Seconds to keep a model loaded (None = forever), as api.Duration.UnmarshalJSON reads
    it: a number of seconds or a Go duration string; negative = forever. Raises ValueError
    with Go's message on a bad one."""
    if value is None:
        return KEEP_ALIVE_S
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"Unsupported type: '{type(value).__name__}'")
    if not isinstance(value, str):
        return None if value < 0 else float(value)
    text = value.strip()
    sign, body = (-1.0, text[1:]) if text[:1] == "-" else (1.0, text.lstrip("+"))
    if body == "0":
        return 0.0
    if not body or "".join(m.group(0) for m in _GO_DURATION.finditer(body)) != body:
        if body and re.fullmatch(r"[0-9.]+", body):
            raise ValueError(f'time: missing unit in duration "{value}"')
        raise ValueError(f'time: invalid duration "{value}"')
    seconds = sum(float(m.group(1)) * _GO_UNITS[m.group(2)] for m in _GO_DURATION.finditer(body))
    return None if sign < 0 and seconds > 0 else seconds


@dataclass
class Fit:
    """What a prompt becomes in a window of ``num_ctx`` tokens."""

    prompt_tokens: int  # the request's whole prompt
    kept: int  # the tokens the model sees (prompt_eval_count)
    dropped_messages: int = 0
    error: str | None = None  # HTTP 400 with this text instead of an answer


def _drop_messages(messages: Sequence[Mapping[str, Any]], num_ctx: int,
                   version: tuple[int, int, int]) -> list[Mapping[str, Any]]:
    """server/prompt.go chatPrompt: the messages that fit, oldest dropped first."""
    msgs = list(messages)
    last = len(msgs) - 1
    if version < (0, 15, 5):  # in reverse; the system messages kept are those before i
        n, system = last, []
        for i in range(last - 1, -1, -1):
            system = [m for m in msgs[:i] if m.get("role") == "system"]
            if prompt_tokens(system + msgs[i:]) > num_ctx:
                break
            n = i
        if n == 0:
            return msgs
        return system + msgs[n:]
    for i in range(last + 1):  # v0.15.5+: forwards, system messages always kept
        system = [m for m in msgs[:i] if m.get("role") == "system"]
        if prompt_tokens(system + msgs[i:]) <= num_ctx or i == last:
            return system + msgs[i:]
    return msgs


def fit_prompt(messages: Sequence[Mapping[str, Any]], num_ctx: int,
               version: str = DEFAULT_VERSION, *, truncate: bool = True, shift: bool = True,
               num_keep: int = NUM_KEEP) -> Fit:
    """How Ollama ``version`` fits a chat's messages into a window of ``num_ctx`` tokens."""
    v = parse_version(version)
    total = prompt_tokens(messages)
    truncate = truncate or v < (0, 12, 6)  # the request field arrived in v0.12.6
    kept_messages = _drop_messages(messages, num_ctx, v) if truncate else list(messages)
    dropped = len(messages) - len(kept_messages)
    tokens = prompt_tokens(kept_messages)
    if v < (0, 30, 0):  # the Go runners
        if tokens <= num_ctx:
            return Fit(total, tokens, dropped)
        if not truncate:
            return Fit(total, 0, dropped, INPUT_TOO_LONG)
        return Fit(total, num_ctx, dropped)  # num_keep + (tokens - num_keep - discard)
    limit = num_ctx - 1  # llama-server wants one token of headroom
    if num_ctx <= 1 or tokens <= limit:
        return Fit(total, tokens, dropped)
    if not truncate:
        body = {"error": {"code": 400, "message": f"request ({tokens} tokens) exceeds the "
                          f"available context size ({num_ctx} tokens), try increasing it",
                          "type": "exceed_context_size_error", "n_prompt_tokens": tokens,
                          "n_ctx": num_ctx}}
        return Fit(total, 0, dropped, json.dumps(body, separators=(",", ":")))
    if v >= (0, 30, 9) and not shift:
        return Fit(total, 0, dropped, PROMPT_TOO_LONG)
    if v >= (0, 30, 11):
        n_keep = max(0, min(num_keep + BOS_TOKENS, limit))
        limit = num_ctx - max((num_ctx - n_keep) // 2, 1)
    return Fit(total, limit, dropped)


# -- thinking ("think", message.thinking) ------------------------------------------------
class _Omitted:
    """The ``think`` value of a request that has none (``server.think_requests``)."""

    def __repr__(self) -> str:
        return "OMITTED"


OMITTED: Any = _Omitted()
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"  # one token each (qwen3, deepseek-r1)
DEFAULT_HOST, DEFAULT_NAMESPACE = "registry.ollama.ai", "library"  # types/model/name.go


@dataclass
class ThinkPlan:
    """What a chat's ``think`` means on a server: an error, or how the thinking comes out."""

    mode: str = "off"  # "on": message.thinking; "inline": <think>...</think> in content
    status: int = 200
    error: str = ""
    after_load: bool = False  # the error comes once the model is loaded


def full_name(name: str) -> str:
    """``model.ParseName(name).String()``: host/namespace/model:tag with the defaults."""
    tag = "latest"
    if name.rfind(":") > name.rfind("/"):
        name, tag = name.rsplit(":", 1)
    parts = name.split("/")
    model = parts[-1]
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    host = parts[-3] if len(parts) >= 3 else DEFAULT_HOST
    return f"{host}/{namespace}/{model}:{tag}"


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _json_kind(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    return "array" if isinstance(value, list) else "object"


def think_binding_error(version: str, think: Any = OMITTED) -> str | None:
    """The 400 text of a ``think`` value the JSON binding refuses (api/types.go), or None."""
    v = parse_version(version)
    if v < (0, 9, 0) or think is None or think is OMITTED or isinstance(think, bool):
        return None
    if v < (0, 11, 0):  # Think *bool
        return (f"json: cannot unmarshal {_json_kind(think)} into Go struct field "
                "ChatRequest.think of type bool")
    levels = ("high", "medium", "low", "max") if v >= (0, 22, 0) else ("high", "medium", "low")
    listed = ", ".join(f'"{level}"' for level in levels)
    if not isinstance(think, str):  # ", true, or false" from #12533 (v0.12.4)
        tail = ", true, or false" if v >= (0, 12, 4) else ""
        return f"think must be a boolean or string ({listed}{tail})"
    if think not in levels:
        return f"invalid think value: {_go_quote(think)} (must be {listed}, true, or false)"
    return None


def think_plan(version: str, model: str, requested: str, capabilities: Sequence[str],
               think: Any = OMITTED) -> ThinkPlan:
    """How Ollama ``version`` treats ``think`` (OMITTED when the request has none or null)
    for ``model`` (as listed; ``requested`` is the name as sent) with these capabilities."""
    v = parse_version(version)
    thinks = "thinking" in capabilities
    if v < (0, 9, 0) or think is None:  # no such field before v0.9.0: ignored
        think = OMITTED
    present = think is not OMITTED
    binding = think_binding_error(version, think)
    if binding is not None:
        return ThinkPlan(status=400, error=binding)
    enabled = think is not OMITTED and think is not False  # ThinkValue.Bool()
    base = model.split("/")[-1].split(":")[0].lower()
    gpt_oss = base.startswith("gpt-oss")
    if not thinks:
        if v >= (0, 12, 5):
            if enabled:
                return ThinkPlan(status=400,
                                 error=f"{_go_quote(requested)} does not support thinking")
        elif enabled or (present and v >= (0, 12, 4)):  # scheduleRunner's capability check
            error = f"{full_name(model)} does not support thinking"
            if architecture(model) == "qwen3" or base == "deepseek-r1":
                error += ". Pull the model again to get the latest version with full " \
                         "thinking support"
            return ThinkPlan(status=400, error=error)
    if isinstance(think, str) and not gpt_oss and (0, 11, 0) <= v < (0, 17, 7):
        return ThinkPlan(status=400, after_load=True,
                         error=f"think value {_go_quote(think)} is not supported for this model")
    if not thinks:
        return ThinkPlan("off")
    if gpt_oss:  # the harmony parser always splits the analysis channel off
        return ThinkPlan("on")
    if not present:
        return ThinkPlan("on" if v >= (0, 12, 4) else "inline")
    return ThinkPlan("on" if enabled else "off")


class ThinkingParser:
    """thinking/parser.go ``Parser.AddContent``: splits raw model output into (thinking,
    content), eating the whitespace after each tag and holding back a possible partial
    closing tag."""

    def __init__(self, opening: str = THINK_OPEN, closing: str = THINK_CLOSE) -> None:
        self.opening, self.closing = opening, closing
        self.state = "looking"
        self.acc = ""

    def add(self, content: str) -> tuple[str, str]:
        self.acc += content
        thinking, remaining = "", ""
        more = True
        while more:
            t, r, more = self._eat()
            thinking += t
            remaining += r
        return thinking, remaining

    def _eat(self) -> tuple[str, str, bool]:
        if self.state == "looking":
            trimmed = self.acc.lstrip()
            if trimmed.startswith(self.opening):
                after = trimmed[len(self.opening):].lstrip()
                self.acc = after
                self.state = "thinking" if after else "eating_start"
                return "", "", True
            if self.opening.startswith(trimmed):  # a partial tag, or whitespace only
                return "", "", False
            self.state, untrimmed, self.acc = "done", self.acc, ""
            return "", untrimmed, False
        if self.state == "eating_start":
            trimmed, self.acc = self.acc.lstrip(), ""
            if not trimmed:
                return "", "", False
            self.state, self.acc = "thinking", trimmed
            return "", "", True
        if self.state == "thinking":
            acc = self.acc
            if self.closing in acc:
                thinking, _, remaining = acc.partition(self.closing)
                remaining = remaining.lstrip()
                self.acc = ""
                self.state = "done" if remaining else "eating_end"
                return thinking, remaining, False
            overlap = next((n for n in range(min(len(acc), len(self.closing)), 0, -1)
                            if acc.endswith(self.closing[:n])), 0)
            self.acc = acc[len(acc) - overlap:] if overlap else ""
            return acc[:len(acc) - overlap], "", False
        if self.state == "eating_end":
            trimmed, self.acc = self.acc.lstrip(), ""
            if trimmed:
                self.state = "done"
            return "", trimmed, False
        done, self.acc = self.acc, ""
        return "", done, False


# ``format`` (api/types.go, server/routes.go, llm/server.go; evaluation notes section 1):
# a string field up to v0.4.x; json.RawMessage from v0.5.0 (#7900/#7939), whose schema was
# decoded into a small struct (its properties' order lost: Go sorts a map's keys) until
# #8002 (v0.5.2); a bad value only logged (unconstrained output) until v0.5.3 (#8130), then
# refused, with no status attached: HTTP 500.
FORMAT_SCHEMA_SINCE = (0, 5, 0)
FORMAT_ORDER_SINCE = (0, 5, 2)
FORMAT_REFUSED_SINCE = (0, 5, 3)
INVALID_FORMAT = 'invalid format: {raw}; expected "json" or a valid JSON Schema object'
INVALID_SCHEMA = "invalid JSON schema in format"


@dataclass(frozen=True)
class FormatPlan:
    """How Ollama ``version`` answers a chat's ``format``: an error (status, text), or the
    content's pieces (None: the model writes freely, as without ``format``)."""

    status: int = 200
    error: str = ""
    pieces: list[str] | None = None


def format_plan(version: str, value: Any, answer: Mapping[str, Any] | None = None) -> FormatPlan:
    """What ``format`` (JSON null or absent: OMITTED/None) does on ``version``."""
    if value is None or value is OMITTED:
        return FormatPlan()
    v = parse_version(version)
    if value == "json":  # every version: the generic JSON grammar
        return FormatPlan(pieces=structured.pieces(structured.GENERIC))
    if v < FORMAT_SCHEMA_SINCE:
        if isinstance(value, str):  # another string: ignored (only "json" is read)
            return FormatPlan()
        kind = "bool" if isinstance(value, bool) else _json_kind(value)
        return FormatPlan(400, f"json: cannot unmarshal {kind} into Go struct field "
                               "ChatRequest.format of type string")
    problem = structured.schema_problem(value) if isinstance(value, dict) else "not a schema"
    if problem is None:
        sort = v < FORMAT_ORDER_SINCE
        made = dict(answer) if answer is not None else structured.sample(value)
        if sort:
            made = {key: made[key] for key in sorted(made)}
        return FormatPlan(pieces=structured.pieces(made))
    if v < FORMAT_REFUSED_SINCE:  # a warning in the server's log; the output unconstrained
        return FormatPlan()
    if isinstance(value, dict):
        return FormatPlan(500, INVALID_SCHEMA)
    return FormatPlan(500, INVALID_FORMAT.format(raw=_go_quote(json.dumps(value))))


def answer_pieces(tokens: Sequence[str], thinking: Sequence[str], mode: str,
                  num_predict: Any = None) -> tuple[list[tuple[str, str]], int, str]:
    """The (thinking, content) of each streamed line, eval_count and done_reason.

    The model generates ``<think>``, the thinking tokens, ``</think>``, then the answer
    (the tags one token each) unless thinking is off or there is no thinking; num_predict
    cuts that. ``mode`` "on" parses it as routes.go does (a line only when it has thinking
    or content); otherwise every token is content, tags included.
    """
    raw = list(tokens)
    if mode != "off" and thinking:
        raw = [THINK_OPEN, *thinking, THINK_CLOSE, *raw]
    done_reason = "stop"
    if isinstance(num_predict, int) and 0 <= num_predict < len(raw):
        raw, done_reason = raw[:num_predict], "length"
    if mode != "on" or not thinking:
        return [("", token) for token in raw], len(raw), done_reason
    parser = ThinkingParser()
    pieces = [piece for piece in map(parser.add, raw) if piece[0] or piece[1]]
    return pieces, len(raw), done_reason


@dataclass
class Script:
    """How the server answers a chat request. Counts are in tokens already sent."""

    tokens: list[str] = field(default_factory=lambda: tokenize(SAMPLE_ANSWER))
    thinking: list[str] = field(default_factory=list)  # produced when thinking is on
    delay: float = 0.0  # seconds before each line after the first (thinking ones too)
    status: int = 200  # not 200: answer {"error": error} with this status, before any token
    error: str = "model runner has unexpectedly stopped, this may be due to resource " \
                 "limitations or an internal error, check ollama server logs for details"
    error_after: int | None = None  # then a last {"error": ...} line, no done line
    drop_after: int | None = None  # then close the socket without ending the chunked body
    malformed_after: int | None = None  # then a line that is not JSON
    end_without_done: bool = False  # end the body cleanly but never send done:true
    blank_lines: bool = False  # an empty line (and a CRLF one) between token lines
    go_escape: bool = True  # escape < > & U+2028 U+2029 as Go's encoder does
    gate: threading.Event | None = None  # hold the second line (thinking or not) until set
    load_duration_ns: int | None = None  # None: as the server measured it
    prompt_eval_count: int | None = None  # None: the tokens of the prompt that were kept
    # What the model writes when ``format`` holds a schema it takes: this object (None: one
    # made from the schema, tests/servers/structured.py), in pieces, as ``message.content``.
    structured: dict[str, Any] | None = None


@dataclass
class LoadedModel:
    """A model in memory, as /api/ps lists it."""

    num_ctx: int
    expires_at: datetime
    active: int = 0  # chats using it now; it is not unloaded under them
    keep_alive: float | None = KEEP_ALIVE_S  # its session's keep_alive (None: forever)
    used_at: float = field(default_factory=time.monotonic)  # its last chat's start or end


class FakeOllama(LocalServer):
    """Start with ``with FakeOllama() as server:``; ``server.url`` is its base URL."""

    def __init__(self, models: Iterable[str] = ("llama3.1:8b", "mistral:7b"),
                 script: Script | None = None, *, not_found: str = "new",
                 port: int = 0, version: str = DEFAULT_VERSION,
                 default_num_ctx: int | None = None,
                 trained_context: Mapping[str, int] | None = None,
                 context_shift: bool = True, reload_delay: float = 0.0,
                 vram_fraction: float = 1.0,
                 capabilities: Mapping[str, list[str]] | None = None,
                 pullable: Mapping[str, list[int]] | None = None,
                 pull_delay: float = 0.0, max_loaded: int | None = None) -> None:
        self.models = list(models)
        self.script = script or Script()
        self.not_found = not_found  # "new" (v0.12+) or "old" wording of the 404
        self.version = version
        self.default_num_ctx = default_num_ctx or default_context(version)
        self.trained_context = dict(trained_context or {})
        self.context_shift = context_shift  # the models' default (off: like deepseek2)
        self.reload_delay = reload_delay
        self.vram_fraction = vram_fraction
        self.capabilities = dict(capabilities or {})
        self.pullable = {name: list(sizes) for name, sizes in (pullable or {}).items()}
        self.pull_delay = pull_delay
        self.max_loaded = max_loaded  # OLLAMA_MAX_LOADED_MODELS (None: no limit)
        self.loaded: dict[str, LoadedModel] = {}
        # What happened, for tests to check:
        self.chat_requests: list[dict[str, Any]] = []
        self.think_requests: list[Any] = []  # each chat's "think" value, or OMITTED
        self.formats: list[Any] = []  # each chat's "format" value, or OMITTED
        self.hangups: list[float] = []  # when a client closed a stream before its end
        self.client_closed = threading.Event()
        self.streams_started = 0
        self.cuts: list[dict[str, Any]] = []  # prompts cut to fit the window
        self.prompt_counts: list[int] = []  # prompt_eval_count of each chat answered
        self.load_durations_ns: list[int] = []  # load_duration of each chat answered
        self.loads: list[tuple[str, int]] = []  # (model, num_ctx) of each (re)load
        self.evictions: list[str] = []  # models unloaded to make room (max_loaded)
        self.pulls: list[str] = []  # model names asked for
        self.pull_cancels = 0  # pulls whose client hung up before the end
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()  # one load at a time, like the scheduler
        super().__init__(_make_handler(self), port)

    def record_hangup(self) -> None:
        with self._lock:
            self.hangups.append(time.monotonic())
        self.client_closed.set()

    # -- models ---------------------------------------------------------------------------
    def resolve(self, name: str) -> str | None:
        """The listed model a name means (``x`` is ``x:latest``), or None."""
        for candidate in (name, _with_tag(name)):
            if candidate in self.models:
                return candidate
        return None

    def trained(self, model: str) -> int:
        return self.trained_context.get(model, TRAINED_CONTEXT)

    def window(self, model: str, options: Mapping[str, Any]) -> int:
        """The context window a chat gets: min(num_ctx or the default, trained length)."""
        requested = options.get("num_ctx")
        if not isinstance(requested, int) or isinstance(requested, bool) or requested <= 0:
            requested = self.default_num_ctx
        return min(max(requested, 4), self.trained(model))

    def expire(self) -> None:
        """Unload the models whose keep_alive ran out."""
        now = datetime.now(UTC)
        with self._lock:
            for name, entry in list(self.loaded.items()):
                if entry.active == 0 and entry.expires_at <= now:
                    del self.loaded[name]

    def unload(self, model: str) -> None:
        with self._lock:
            self.loaded.pop(model, None)

    def ps(self) -> list[dict[str, Any]]:
        self.expire()
        with self._lock:
            entries = sorted(self.loaded.items(), key=lambda item: item[1].expires_at,
                             reverse=True)  # longest time left first, as PsHandler sorts
        rows = []
        for name, entry in entries:
            tag = _tag(name)
            size = tag["size"] + entry.num_ctx * KV_BYTES_PER_TOKEN
            row = {"name": name, "model": name, "size": size, "digest": tag["digest"],
                   "details": tag["details"], "expires_at": _rfc3339(entry.expires_at),
                   "size_vram": int(size * self.vram_fraction)}
            if parse_version(self.version) >= (0, 9, 7):  # ollama#11331
                row["context_length"] = entry.num_ctx
            rows.append(row)
        return rows

    def show(self, model: str) -> dict[str, Any]:
        arch = architecture(model)
        tag = _tag(model)
        trained = self.trained(model)
        return {
            "license": "LLAMA 3.1 COMMUNITY LICENSE AGREEMENT",
            "modelfile": (f'# Modelfile generated by "ollama show"\n# To build a new Modelfile '
                          f"based on this, replace FROM with:\n# FROM {model}\n\n"
                          f"FROM /root/.ollama/models/blobs/sha256-{tag['digest']}\n"
                          f'TEMPLATE """{_TEMPLATE}"""\n{_MODELFILE_PARAMETERS}\n'),
            "parameters": _PARAMETERS,
            "template": _TEMPLATE,
            "details": tag["details"],
            "model_info": {
                "general.architecture": arch,
                "general.basename": model.split(":")[0],
                "general.file_type": 15,
                "general.parameter_count": PARAMETER_COUNT,
                "general.quantization_version": 2,
                f"{arch}.attention.head_count": 32,
                f"{arch}.attention.head_count_kv": 8,
                f"{arch}.attention.layer_norm_rms_epsilon": 1e-05,
                f"{arch}.block_count": 32,
                f"{arch}.context_length": trained,
                f"{arch}.embedding_length": 4096,
                f"{arch}.feed_forward_length": 14336,
                f"{arch}.rope.freq_base": 500000,
                f"{arch}.vocab_size": 128256,
                "tokenizer.ggml.bos_token_id": 128000,
                "tokenizer.ggml.eos_token_id": 128009,
                "tokenizer.ggml.model": "gpt2",
                "tokenizer.ggml.pre": "llama-bpe",
                "tokenizer.ggml.merges": None,  # token arrays only with verbose: true
                "tokenizer.ggml.token_type": None,
                "tokenizer.ggml.tokens": None,
            },
            "capabilities": self.capabilities.get(model, ["completion"]),
            "modified_at": tag["modified_at"],
        }


def _with_tag(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _encode(obj: dict[str, Any], go_escape: bool) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    if go_escape:
        for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                              ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
            text = text.replace(char, escaped)
    return text.encode() + b"\n"


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _now() -> str:
    return _rfc3339(datetime.now(UTC))


def _digest(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


class _ClientGone(Exception):
    pass


class _Refused(Exception):
    """Answer with an error status before anything was streamed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _make_handler(server: FakeOllama) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        # -- plumbing -------------------------------------------------------------------
        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

        def _start_ndjson(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

        def _chunk(self, data: bytes) -> None:
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            except OSError as exc:
                raise _ClientGone from exc

        def _wait(self, seconds: float, gate: threading.Event | None = None) -> None:
            """Sleep, or wait for the gate, while watching for the client hanging up."""
            deadline = time.monotonic() + seconds
            while True:
                remaining = deadline - time.monotonic()
                if gate is None and remaining <= 0:
                    return
                if gate is not None and gate.is_set():
                    return
                timeout = 0.02 if gate is not None else min(remaining, 0.02)
                readable, _, _ = select.select([self.connection], [], [], timeout)
                if readable:
                    try:
                        if self.connection.recv(1, socket.MSG_PEEK) == b"":
                            raise _ClientGone
                    except OSError as exc:
                        raise _ClientGone from exc

        def _body(self) -> dict[str, Any] | None:
            """The request's JSON object, or None once an error has been answered."""
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not raw:
                self._json(400, {"error": "missing request body"})
                return None
            try:
                body = json.loads(raw)
            except ValueError:
                self._json(400, {"error": "invalid character 'x' looking for beginning of value"})
                return None
            if not isinstance(body, dict):
                self._json(400, {"error": "json: cannot unmarshal array into Go value"})
                return None
            return body

        # -- routes ---------------------------------------------------------------------
        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            if self.path == "/":
                self._send(200, b"Ollama is running", "text/plain; charset=utf-8")
            elif self.path == "/api/version":
                self._json(200, {"version": server.version})
            elif self.path == "/api/tags":
                self._json(200, {"models": [_tag(name) for name in server.models]})
            elif self.path == "/api/ps":
                self._json(200, {"models": server.ps()})
            else:
                self._send(404, b"404 page not found", "text/plain")

        def do_POST(self) -> None:
            routes = {"/api/chat": self._chat, "/api/show": self._show, "/api/pull": self._pull}
            route = routes.get(self.path)
            if route is None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self._send(404, b"404 page not found", "text/plain")
                return
            body = self._body()
            if body is not None:
                route(body)

        # -- /api/show --------------------------------------------------------------------
        def _show(self, body: dict[str, Any]) -> None:
            name = body.get("model") or body.get("name")
            if not name:
                self._json(400, {"error": "model is required"})
                return
            model = server.resolve(str(name))
            if model is None:
                self._json(404, {"error": f"model '{name}' not found"})
                return
            self._json(200, server.show(model))

        # -- /api/chat --------------------------------------------------------------------
        def _chat(self, body: dict[str, Any]) -> None:
            started = time.monotonic_ns()
            server.chat_requests.append(body)
            think = body.get("think", OMITTED)
            server.think_requests.append(OMITTED if think is None else think)
            try:  # a bad keep_alive fails the JSON binding, before anything else
                keep_alive = parse_keep_alive(body.get("keep_alive"))
            except ValueError as exc:
                self._json(400, {"error": str(exc)})
                return
            binding = think_binding_error(server.version, think)
            if binding is not None:
                self._json(400, {"error": binding})
                return
            asked = body.get("format", OMITTED)
            server.formats.append(OMITTED if asked is None else asked)
            formatted = format_plan(server.version, asked, server.script.structured)
            if formatted.status == 400:  # the request's JSON binding
                self._json(400, {"error": formatted.error})
                return
            name = body.get("model")
            if not name:
                self._json(400, {"error": "model is required"})
                return
            model = server.resolve(str(name))
            if model is None:
                text = (f"model '{name}' not found" if server.not_found == "new"
                        else f'model "{name}" not found, try pulling it first')
                self._json(404, {"error": text})
                return
            script = server.script
            if script.status != 200:
                self._json(script.status, {"error": script.error})
                return
            messages = body.get("messages") or []
            if not messages and keep_alive == 0:
                server.unload(model)
                self._json(200, _empty_answer(str(name), "unload"))
                return
            if formatted.status != 200:  # the completion's check, once the model is found
                self._json(formatted.status, {"error": formatted.error})
                return
            plan = think_plan(server.version, model, str(name),
                              server.capabilities.get(model, ["completion"]), think)
            if plan.status != 200 and not plan.after_load:  # before the model loads
                self._json(plan.status, {"error": plan.error})
                return
            options = body.get("options") or {}
            num_ctx = server.window(model, options)
            entry: LoadedModel | None = None
            try:
                entry, reloaded = self._schedule(model, num_ctx, keep_alive)
                waited = time.monotonic_ns() - started
                extra = LOAD_OVERHEAD_NS if reloaded else LOADED_NS
                load_ns = waited + extra if script.load_duration_ns is None \
                    else script.load_duration_ns
                if not messages:
                    self._json(200, _empty_answer(str(name), "load"))
                    return
                self._answer(body, model, num_ctx, options, script, started + waited,
                             load_ns, plan, formatted.pieces)
            except _Refused as refused:
                self._json(refused.status, {"error": refused.message})
            except _ClientGone:
                server.record_hangup()
            finally:
                if entry is not None:
                    self._release(model, entry, keep_alive)
            self.close_connection = True

        def _schedule(self, model: str, num_ctx: int,
                      keep_alive: float | None) -> tuple[LoadedModel, bool]:
            """The loaded model (loading it first if need be) and whether it was loaded now."""
            server.expire()
            with server._load_lock:
                with server._lock:
                    entry = server.loaded.get(model)
                reloaded = entry is None or entry.num_ctx != num_ctx
                if reloaded:
                    self._make_room(model)
                    self._wait(server.reload_delay)  # raises _ClientGone: nothing loaded
                    entry = LoadedModel(num_ctx, _expiry(keep_alive), keep_alive=keep_alive)
                    with server._lock:
                        server.loaded[model] = entry
                        server.loads.append((model, num_ctx))
                assert entry is not None
                with server._lock:
                    entry.active += 1
                    entry.used_at = time.monotonic()
                    entry.keep_alive = keep_alive  # the session's latest, as Ollama keeps it
                return entry, reloaded

        def _make_room(self, model: str) -> None:
            """With ``max_loaded`` models loaded (``model`` aside), unload an idle one: the
            shortest keep_alive, then the least recently used; none idle, wait for one."""
            while server.max_loaded is not None:
                with server._lock:
                    others = {name: entry for name, entry in server.loaded.items()
                              if name != model}
                    if len(others) < max(server.max_loaded, 1):
                        return
                    idle = [(math.inf if entry.keep_alive is None else entry.keep_alive,
                             entry.used_at, name)
                            for name, entry in others.items() if entry.active == 0]
                    if idle:
                        victim = min(idle)[2]
                        del server.loaded[victim]
                        server.evictions.append(victim)
                        continue
                self._wait(0.01)  # its chats end first; raises _ClientGone

        def _release(self, model: str, entry: LoadedModel, keep_alive: float | None) -> None:
            with server._lock:
                entry.active -= 1
                entry.used_at = time.monotonic()
                entry.expires_at = _expiry(keep_alive)
                if keep_alive == 0 and entry.active == 0 and server.loaded.get(model) is entry:
                    del server.loaded[model]

        def _answer(self, body: dict[str, Any], model: str, num_ctx: int,
                    options: Mapping[str, Any], script: Script, ready_ns: int,
                    load_ns: int, plan: ThinkPlan, pieces: list[str] | None = None) -> None:
            messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
            num_keep = options.get("num_keep")
            shift = body.get("shift")
            fit = fit_prompt(messages, num_ctx, server.version,
                             truncate=body.get("truncate") is not False,
                             shift=server.context_shift if shift is None else bool(shift),
                             num_keep=num_keep if isinstance(num_keep, int) else NUM_KEEP)
            if fit.error is not None:
                raise _Refused(400, fit.error)
            if plan.status != 200:  # the level check comes after the prompt is built
                raise _Refused(plan.status, plan.error)
            if fit.kept < fit.prompt_tokens:
                with server._lock:
                    server.cuts.append({"model": model, "prompt_tokens": fit.prompt_tokens,
                                        "kept": fit.kept, "num_ctx": num_ctx,
                                        "dropped_messages": fit.dropped_messages})
            count = fit.kept if script.prompt_eval_count is None else script.prompt_eval_count
            with server._lock:
                server.prompt_counts.append(count)
                server.load_durations_ns.append(load_ns)
            stats = _Stats(ready_ns, load_ns, count)
            self._stream_chat(body, script, stats, plan.mode, pieces)

        def _stream_chat(self, body: dict[str, Any], script: Script, stats: _Stats,
                         mode: str = "off", content: list[str] | None = None) -> None:
            model = body["model"]
            limit = (body.get("options") or {}).get("num_predict")
            tokens = script.tokens if content is None else content
            pieces, eval_count, done_reason = answer_pieces(tokens, script.thinking, mode,
                                                            limit)
            if body.get("stream") is False:
                thinking = "".join(piece[0] for piece in pieces)
                self._json(200, _final(model, "".join(piece[1] for piece in pieces),
                                       done_reason, eval_count, stats, thinking))
                return
            server.streams_started += 1
            self._start_ndjson()
            for index, (thinking, token) in enumerate(pieces):
                if index == script.error_after:
                    self._chunk(_encode({"error": script.error}, script.go_escape))
                    self._chunk(b"")
                    return
                if index == script.drop_after:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if index == script.malformed_after:
                    self._chunk(b'{"model":"' + model.encode() + b'","message":{"con\n')
                if index == 1 and script.gate is not None:
                    self._wait(0, script.gate)
                if index > 0 and script.delay:
                    self._wait(script.delay)
                if script.blank_lines:
                    self._chunk(b"\n\r\n")
                message = {"role": "assistant", "content": token}
                if thinking:  # api.Message: "thinking" is omitempty, "content" is not
                    message["thinking"] = thinking
                line = {"model": model, "created_at": _now(), "message": message, "done": False}
                self._chunk(_encode(line, script.go_escape))
            if not script.end_without_done:
                final = _final(model, "", done_reason, eval_count, stats)
                self._chunk(_encode(final, script.go_escape))
            self._chunk(b"")  # the terminating zero-length chunk

        # -- /api/pull --------------------------------------------------------------------
        def _pull(self, body: dict[str, Any]) -> None:
            name = str(body.get("model") or body.get("name") or "")
            if not name:
                self._json(400, {"error": "invalid model name"})
                return
            with server._lock:
                server.pulls.append(name)
            stream = body.get("stream") is not False
            full = _with_tag(name)
            layers = server.pullable.get(name, server.pullable.get(full))
            cached = server.resolve(name) is not None
            try:
                if stream:
                    self._start_ndjson()
                self._progress(stream, {"status": "pulling manifest"})
                if layers is None:
                    if stream:
                        self._chunk(_encode({"error": PULL_NOT_FOUND}, True))
                        self._chunk(b"")
                    else:
                        self._json(500, {"error": PULL_NOT_FOUND})
                    return
                for index, size in enumerate(layers):
                    digest = _digest(full, index, size)
                    status = {"status": f"pulling {digest[:12]}", "digest": f"sha256:{digest}",
                              "total": size}
                    if cached:  # the blob is there already: one line, total = completed
                        self._progress(stream, {**status, "completed": size})
                        continue
                    self._progress(stream, status)  # completed 0 is omitted (omitempty)
                    for step in range(1, 5):
                        self._wait(server.pull_delay)
                        self._progress(stream, {**status, "completed": size * step // 4})
                for status_text in ("verifying sha256 digest", "writing manifest"):
                    self._wait(server.pull_delay)
                    self._progress(stream, {"status": status_text})
                with server._lock:
                    if full not in server.models and name not in server.models:
                        server.models.append(full)
                if stream:
                    self._progress(stream, {"status": "success"})
                    self._chunk(b"")
                else:
                    self._json(200, {"status": "success"})
            except _ClientGone:
                with server._lock:
                    server.pull_cancels += 1
            self.close_connection = True

        def _progress(self, stream: bool, line: dict[str, Any]) -> None:
            if stream:
                self._chunk(_encode(line, True))
            else:  # nothing to write yet: still notice a client that gave up waiting
                readable, _, _ = select.select([self.connection], [], [], 0)
                try:
                    if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                        raise _ClientGone
                except OSError as exc:
                    raise _ClientGone from exc

    return Handler


@dataclass
class _Stats:
    ready_ns: int  # when the model was ready (monotonic)
    load_ns: int
    prompt_eval_count: int


def _expiry(keep_alive: float | None) -> datetime:
    now = datetime.now(UTC)
    return now + (FOREVER if keep_alive is None else timedelta(seconds=keep_alive))


def _empty_answer(model: str, done_reason: str) -> dict[str, Any]:
    return {"model": model, "created_at": _now(),
            "message": {"role": "assistant", "content": ""}, "done_reason": done_reason,
            "done": True}


def _final(model: str, content: str, done_reason: str, eval_count: int,
           stats: _Stats, thinking: str = "") -> dict[str, Any]:
    """The done line: load + prompt evaluation + generation, generation as it really took."""
    eval_ns = max(time.monotonic_ns() - stats.ready_ns, 1)
    message = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    return {"model": model, "created_at": _now(), "message": message, "done": True,
            "done_reason": done_reason,
            "total_duration": stats.load_ns + PROMPT_EVAL_NS + eval_ns,
            "load_duration": stats.load_ns,
            "prompt_eval_count": stats.prompt_eval_count, "prompt_eval_duration": PROMPT_EVAL_NS,
            "eval_count": eval_count, "eval_duration": eval_ns}


def tag_digest(name: str) -> str:
    """A model's digest in /api/tags and /api/ps: 64 hex digits, one per model (as Ollama's
    manifest digests are)."""
    return _digest("manifest", name)


def _tag(name: str) -> dict[str, Any]:
    return {"name": name, "model": name, "modified_at": "2025-06-27T13:46:49.045595241-07:00",
            "size": MODEL_SIZE, "digest": tag_digest(name),
            "details": {"parent_model": "", "format": "gguf", "family": "llama",
                        "families": ["llama"], "parameter_size": "8.0B",
                        "quantization_level": "Q4_K_M"}}


_TEMPLATE = ("{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
             "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n")
_STOPS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
_PARAMETERS = "\n".join(f'stop{" " * 27}"{stop}"' for stop in _STOPS)
_MODELFILE_PARAMETERS = "\n".join(f"PARAMETER stop {stop}" for stop in _STOPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds between tokens")
    parser.add_argument("--answer-file", help="markdown file to stream as the answer")
    parser.add_argument("--models", default="llama3.1:8b,mistral:7b")
    parser.add_argument("--version", default=DEFAULT_VERSION, help="the Ollama version to be")
    parser.add_argument("--default-num-ctx", type=int,
                        help="window of a request without num_ctx (OLLAMA_CONTEXT_LENGTH); "
                             "default 2048 up to v0.6.6, else 4096")
    parser.add_argument("--trained-context", type=int, default=TRAINED_CONTEXT,
                        help="every model's trained context length")
    parser.add_argument("--reload-delay", type=float, default=0.0,
                        help="seconds a model takes to load")
    parser.add_argument("--max-loaded", type=int,
                        help="models kept loaded at once (OLLAMA_MAX_LOADED_MODELS); "
                             "default: no limit")
    parser.add_argument("--pullable", default="",
                        help="NAME[,NAME]: models /api/pull can fetch (3 layers of a few MB)")
    parser.add_argument("--pull-delay", type=float, default=0.2,
                        help="seconds between pull progress lines")
    thinking = parser.add_mutually_exclusive_group()
    thinking.add_argument("--thinking", help="text the model thinks before answering, when "
                                              "thinking is on (see --capabilities)")
    thinking.add_argument("--thinking-file", help="file with that text")
    parser.add_argument("--capabilities", action="append", default=[],
                        metavar="MODEL=CAP[,CAP]",
                        help="a model's /api/show capabilities, e.g. "
                             "qwen3:8b=completion,thinking (repeatable; default completion)")
    args = parser.parse_args()
    answer = Path(args.answer_file).read_text() if args.answer_file else SAMPLE_ANSWER
    thought = Path(args.thinking_file).read_text() if args.thinking_file else args.thinking
    models = args.models.split(",")
    capabilities: dict[str, list[str]] = {}
    for item in args.capabilities:
        name, _, caps = item.partition("=")
        capabilities[name] = [cap for cap in caps.split(",") if cap]
    pullable = {name: [4_200_000, 2_100_000, 485] for name in args.pullable.split(",") if name}
    script = Script(tokens=tokenize(answer), thinking=tokenize(thought or ""), delay=args.delay)
    server = FakeOllama(models, script, port=args.port, version=args.version,
                        default_num_ctx=args.default_num_ctx,
                        trained_context={name: args.trained_context for name in models},
                        reload_delay=args.reload_delay, max_loaded=args.max_loaded,
                        capabilities=capabilities,
                        pullable=pullable, pull_delay=args.pull_delay)
    print(f"Fake Ollama {args.version} on {server.url} (models: {args.models}; default window "
          f"{server.default_num_ctx})", flush=True)
    server.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
