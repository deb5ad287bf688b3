"""Ollama client: streams NDJSON from ``POST /api/chat`` (see ../shared/seed/llm-backends.md).

Every chat sends ``options.num_ctx``: Ollama's default window (2048 tokens up to v0.6.6, 4096
after) is smaller than the PV prompt plus its answer, and a prompt over the window is cut from
the front without a word (HTTP 200; ollama/ollama#3839). The window is sized from an estimate
of the prompt, capped at the model's trained length (``/api/show``), and reuses the window the
model is loaded with when that is big enough (``/api/ps``), since a new ``num_ctx`` reloads it
(``choose_window``). The only tell of a cut prompt is the final chunk's ``prompt_eval_count``,
read after the run (``prompt_was_cut``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import requests

from . import http
from .base import (
    THINK_LEVELS,
    THINK_OFF,
    THINK_ON,
    Backend,
    BackendOptions,
    ModelState,
    Schema,
    chat_messages,
)
from .context import WINDOW_SIZES, ContextFit, round_window, sized_prompt
from .errors import (
    BackendConnectionError,
    BackendStatusError,
    ContextLengthError,
    ModelNotFoundError,
    StreamError,
    TruncatedStreamError,
)
from .sampling import DEFAULT_SAMPLING, Sampling
from .shared import shared
from .stream import PullProgress, PullStream, TokenStream, chunk_fragments

DEFAULT_HOST = "http://localhost:11434"
DEFAULT_MODEL = "llama3.1:8b"  # the seed's production model
UNREACHABLE_HINT = "Make sure Ollama is running (`ollama serve`)."
_NS = 1e-9
# Ollama's 400s for a prompt over the window: 0.30+ without context shift, and the 0.12-0.2x
# runners when the request says ``truncate: false``.
CONTEXT_ERRORS = ("longer than the context length", "exceeds the context length")
THINKING_HINT = ("Set Think to 'server default' in the sidebar: this model does not think, "
                 "or does not take that setting.")
# Thinking levels for models other than gpt-oss arrived in v0.17.7 (#14625); before, a level
# was refused with HTTP 400 ("think value ... is not supported for this model").
LEVELS_FOR_ALL = (0, 17, 7)
# A schema in ``format`` refused: a string field before v0.5.0 (HTTP 400, Go's binding
# error), an invalid schema from v0.5.3 (HTTP 500 "invalid format ...").
FORMAT_HINT = ("Structured answers send a JSON schema in `format`, which Ollama takes from "
               "v0.5.0: upgrade Ollama, or pick the Markdown report format.")
# Both say the prompt alone is over the window: lower max tokens cannot help.
CONTEXT_HINT = ("Shorten the prompt (it alone is over the window: lower max tokens cannot "
                "help), or pick a model with a longer window (backends.ollama.num_ctx in "
                "config.yaml sets the window the app asks for).")


# Windows the app asks Ollama for. Few and stable, because changing ``num_ctx`` between
# requests reloads the model (seconds to minutes): runs of similar size share one window.
STABLE_WINDOWS = WINDOW_SIZES
NUM_KEEP = 4  # tokens Ollama keeps at the front of a cut prompt (api.DefaultOptions)


def choose_window(needed: int, *, model_limit: int | None = None,
                  loaded: int | None = None) -> int:
    """The window to ask for: the one the model is loaded with if it is big enough (no
    reload), else the smallest stable size that holds ``needed``; never above the model's
    trained length (Ollama caps it there anyway)."""
    if loaded is not None and loaded >= needed:
        return min(loaded, model_limit) if model_limit else loaded
    return round_window(needed, model_limit)


def prompt_was_cut(reported: int | None, expected: int, window: int | None) -> bool:
    """Whether the server's prompt token count shows that it cut the prompt.

    ``expected`` is the calibrated estimate. A cut prompt fills the window (Ollama up to
    0.2x keeps ``num_ctx`` tokens), or about half of it (0.30+ with context shift keeps
    ``num_ctx - (num_ctx - num_keep) / 2``, ollama#17427), or is far below the prompt's size
    for any other reason. A count near the estimate is never a cut: estimates are within
    ~20% once calibrated, and the default ratio is near the models' own.
    """
    if reported is None or reported <= 0:
        return False  # no count (some versions omit it for a cached prompt): no evidence
    if window is not None and reported >= window - 8:
        return True  # the prompt filled the window: cut, or no room left for an answer
    if reported < expected * 0.5:
        return True
    if window is not None and expected > window and reported < expected * 0.92:
        # A prompt over the window whose count came back short: before v0.15.5 Ollama drops
        # whole messages first, the system prompt among them (server/prompt.go chatPrompt).
        return True
    if window is None or reported >= expected * 0.85:
        return False
    half = window - (window - NUM_KEEP) // 2
    return abs(reported - half) <= 8


class OllamaBackend(Backend):
    """Ollama's native chat API. ``stream()`` yields tokens as Ollama flushes them."""

    name: ClassVar[str] = "ollama"
    label: ClassVar[str] = "Ollama"
    default_host: ClassVar[str] = DEFAULT_HOST
    default_model: ClassVar[str] = DEFAULT_MODEL
    can_pull_models: ClassVar[bool] = True
    loads_models_on_demand: ClassVar[bool] = True

    def __init__(self, host: str = DEFAULT_HOST, model: str = DEFAULT_MODEL, *,
                 connect_timeout: float = http.CONNECT_TIMEOUT_S,
                 read_timeout: float = http.READ_TIMEOUT_S,
                 keep_alive: str | int | None = None, num_ctx: int | None = None) -> None:
        # Requests go to the URL as given (it may hold user:password@); every message,
        # repr and record shows ``host``, the same URL without credentials.
        self._base_url = http.check_host(host, DEFAULT_HOST)
        self.host = http.redact(self._base_url)
        self.model = model
        self.timeout: http.Timeout = (connect_timeout, read_timeout)
        self.keep_alive = keep_alive
        self.num_ctx = num_ctx  # None: sized per run (backends.ollama.num_ctx: auto)

    @classmethod
    def from_options(cls, options: BackendOptions) -> OllamaBackend:
        return cls(options.host, options.model, connect_timeout=options.connect_timeout,
                   read_timeout=options.read_timeout, num_ctx=options.num_ctx,
                   keep_alive=options.keep_alive)

    def __repr__(self) -> str:
        return f"OllamaBackend(host={self.host!r}, model={self.model!r})"

    @classmethod
    def missing_model_hint(cls, model: str) -> str:
        return f"Pull it first: `ollama pull {model}`"

    @classmethod
    def find_model(cls, model: str, models: Sequence[str]) -> str | None:
        """Ollama reads a name without a tag as ``name:latest`` (``tinyllama`` is listed as
        ``tinyllama:latest`` once pulled); the tag is the part after a ':' in the last path
        segment (``host:11434/library/x`` has none)."""
        wanted = _with_latest(model)
        return next((name for name in models if _with_latest(name) == wanted), None)

    def list_models(self) -> list[str]:
        """Names of the models pulled on the server (``GET /api/tags``)."""
        response = self._request("GET", "/api/tags")
        if response.status_code != 200:
            raise self._status_error(response)
        return [m.get("name") or m.get("model", "") for m in response.json().get("models", [])]

    def model_digest(self) -> str | None:
        """The model's digest in ``GET /api/tags`` (cached): 'sha256:' and 64 hex digits;
        None when the model is not listed or the server gives no digest."""
        def ask() -> str | None:
            response = self._request("GET", "/api/tags")
            if response.status_code != 200:
                raise self._status_error(response)
            listed = {m.get("name") or m.get("model", ""): m
                      for m in response.json().get("models", []) if isinstance(m, dict)}
            name = self.find_model(self.model, list(listed))
            return _sha256(listed[name].get("digest")) if name is not None else None

        return shared().ollama_digests.remember((self._base_url, self.model), ask)

    # -- context window ---------------------------------------------------------------------
    def context_fit(self, prompt: str, system: str = "",
                    max_tokens: int = DEFAULT_SAMPLING.max_tokens) -> ContextFit:
        """Estimated prompt tokens against the window this run would be sent with."""
        texts = _texts(prompt, system)
        estimate = shared().estimator.estimate(self.host, self.model, texts)
        window, limit = self._window(estimate, max_tokens)
        if self.num_ctx is None:  # sized for this run, up to the model's trained length
            return ContextFit(estimate, False, max_tokens, window, limit)
        return ContextFit(estimate, False, max_tokens, window, limit,
                          limit_by="backends.ollama.num_ctx in config.yaml",
                          raise_limit="set backends.ollama.num_ctx: {tokens} (or auto) in "
                                      "config.yaml")

    def _window(self, estimate: int, max_tokens: int) -> tuple[int, int | None]:
        """(the num_ctx to send, the model's trained length if known)."""
        limit = self.trained_length()
        if self.num_ctx is not None:
            return (min(self.num_ctx, limit) if limit else self.num_ctx), limit
        needed = sized_prompt(estimate, exact=False) + max_tokens
        loaded = self._loaded().get("context_length")
        return choose_window(needed, model_limit=limit,
                             loaded=loaded if isinstance(loaded, int) else None), limit

    def show(self) -> dict[str, Any]:
        """``POST /api/show`` for the model (cached): ``model_info``, ``capabilities``..."""
        def ask() -> dict[str, Any]:
            response = self._request("POST", "/api/show", json_body={"model": self.model})
            if response.status_code != 200:
                raise self._status_error(response)
            info: dict[str, Any] = response.json()
            return info

        return shared().ollama_shows.remember((self._base_url, self.model), ask)

    def trained_length(self) -> int | None:
        """The longest window the model was trained for (``<arch>.context_length``), or None
        when the server cannot say (the chat will then report a missing model itself)."""
        try:
            info = self.show().get("model_info") or {}
        except BackendConnectionError:
            raise  # the chat would fail the same way: say so once, now
        except (BackendStatusError, ValueError):
            return None
        arch = info.get("general.architecture")
        value = info.get(f"{arch}.context_length")
        if not isinstance(value, int):  # an unusual architecture key: any *.context_length
            value = next((v for k, v in info.items()
                          if k.endswith(".context_length") and isinstance(v, int)), None)
        return value

    def _loaded(self) -> dict[str, Any]:
        """The model's entry in ``GET /api/ps`` ({} when it is not loaded or unknown)."""
        try:
            response = self._request("GET", "/api/ps")
            models = response.json().get("models") or [] if response.status_code == 200 else []
        except BackendConnectionError:
            raise
        except (BackendStatusError, ValueError, AttributeError):
            return {}
        return next((m for m in models if isinstance(m, dict) and self.find_model(
            self.model, [str(m.get("name") or ""), str(m.get("model") or "")])), {})

    def model_state(self) -> ModelState:
        """Version (``/api/version``), and from ``/api/ps``: loaded, window, share on CPU."""
        version = http.json_value(self._request("GET", "/api/version"), "version")
        loaded = self._loaded()
        size, in_vram = loaded.get("size"), loaded.get("size_vram")
        cpu_share = None
        if isinstance(size, int) and size > 0 and isinstance(in_vram, int):
            cpu_share = max(0.0, 1.0 - in_vram / size)
        window = loaded.get("context_length")
        return ModelState(server_version=version, loaded=bool(loaded),
                          window=window if isinstance(window, int) else None,
                          cpu_share=cpu_share, expires_at=loaded.get("expires_at"),
                          think_options=self._think_options(version))

    def _think_options(self, version: str | None) -> tuple[str, ...]:
        """From ``/api/show`` capabilities: gpt-oss takes only levels (it always thinks);
        other thinking models on/off, and levels from v0.17.7."""
        try:
            info = self.show()
        except (BackendConnectionError, BackendStatusError, ValueError):
            return ()
        if "thinking" not in (info.get("capabilities") or []):
            return ()
        arch = (info.get("model_info") or {}).get("general.architecture", "")
        if arch == "gptoss" or self.model.startswith("gpt-oss"):
            return THINK_LEVELS
        levels = THINK_LEVELS if _version(version) >= LEVELS_FOR_ALL else ()
        return (THINK_OFF, THINK_ON, *levels)

    # -- pulling a model ----------------------------------------------------------------------
    def pull(self, model: str) -> PullStream:
        """``POST /api/pull``, streamed: one ``PullProgress`` per line; ``close()`` cancels
        (Ollama stops the download when the client hangs up)."""
        abort = http.Abort()
        return PullStream(self._pull_lines(model, abort), abort)

    def _pull_lines(self, model: str, abort: http.Abort) -> Iterator[PullProgress]:
        response = self._request("POST", "/api/pull", json_body={"model": model, "stream": True},
                                 stream=True, abort=abort)
        try:
            if response.status_code != 200:
                raise self._status_error(response)
            lines = http.iter_lines(response, backend="Ollama", host=self.host,
                                     partial_text=lambda: "")
            for line in lines:
                try:
                    item = json.loads(line)
                except ValueError:
                    continue  # a damaged progress line is no reason to give up the pull
                if not isinstance(item, dict):
                    continue
                if item.get("error"):
                    # Under HTTP 200: the status was sent before the registry answered.
                    error = str(item["error"])
                    raise BackendStatusError(
                        f"Ollama could not pull {model!r}: {error}",
                        hint="Check the model's name and tag (ollama.com/library lists them) "
                             "and that the Ollama server can reach its registry.",
                        server_message=error, status_code=200, backend="Ollama",
                        host=self.host)
                progress = PullProgress(str(item.get("status", "")), item.get("completed"),
                                        item.get("total"), str(item.get("digest", "")))
                yield progress
                if progress.status == "success":
                    shared().ollama_shows.forget((self._base_url, model))
                    shared().ollama_digests.forget((self._base_url, model))
                    return
            raise TruncatedStreamError(
                f"The pull of {model!r} ended before Ollama said success.",
                hint="Pull it again; Ollama resumes the download.", backend="Ollama",
                host=self.host)
        finally:
            response.close()

    # -- generating -------------------------------------------------------------------------
    def stream(self, prompt: str, system: str = "", sampling: Sampling = DEFAULT_SAMPLING,
               *, sse: bool = False, schema: Schema | None = None) -> TokenStream:
        """Start a chat; iterate the result for text fragments, ``close()`` it to cancel.
        Ollama always streams (``sse`` changes nothing)."""
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": chat_messages(prompt, system),
            "stream": True,
            **sampling_fields(sampling),
            **format_field(schema),
        }
        if self.keep_alive is not None:
            payload["keep_alive"] = self.keep_alive
        abort = http.Abort()
        return TokenStream(lambda handle: self._fragments(handle, payload, abort), abort=abort)

    def _fragments(self, handle: TokenStream, payload: dict[str, Any],
                   abort: http.Abort) -> Iterator[str]:
        texts = [message["content"] for message in payload["messages"]]
        expected = shared().estimator.estimate(self.host, self.model, texts)
        window, _ = self._window(expected, payload["options"]["num_predict"])
        payload["options"]["num_ctx"] = window
        handle.stats.context_window = window
        response = self._request("POST", "/api/chat", json_body=payload, stream=True,
                                 abort=abort)
        try:
            if response.status_code != 200:
                raise self._status_error(response)
            lines = http.iter_lines(response, backend="Ollama", host=self.host,
                                     partial_text=lambda: handle.text)
            for line in lines:
                try:
                    chunk = json.loads(line)
                except ValueError:
                    raise StreamError(
                        f"Ollama sent a line that is not JSON: {line[:120]!r}",
                        hint="The text received so far is kept.", backend="Ollama",
                        host=self.host, partial_text=handle.text) from None
                if "error" in chunk:
                    # Mid-stream failure: HTTP status stays 200, the last line is the error.
                    raise StreamError(
                        f"Ollama stopped with an error: {chunk['error']}",
                        hint="The text received so far is kept. Check `ollama serve`'s log.",
                        backend="Ollama", host=self.host, server_message=str(chunk["error"]),
                        status_code=200, partial_text=handle.text)
                message = chunk.get("message") or {}
                thought = message.get("thinking")
                if thought:  # v0.9.0+: thinking lines come first
                    handle.stats.thinking_tokens = (handle.stats.thinking_tokens or 0) + 1
                yield from chunk_fragments(thought, message.get("content"))
                if chunk.get("done"):
                    _record_final_stats(handle, chunk)
                    self._check_prompt_count(handle, texts, expected)
                    return
            raise TruncatedStreamError(
                "The Ollama stream ended before the answer was complete (no done message).",
                hint="The text received so far is kept. Check `ollama serve`'s log.",
                backend="Ollama", host=self.host, partial_text=handle.text)
        finally:
            response.close()

    def _check_prompt_count(self, handle: TokenStream, texts: list[str], expected: int) -> None:
        """Mark a prompt the server cut; learn the model's token ratio from one it did not."""
        stats = handle.stats
        stats.prompt_truncated = prompt_was_cut(stats.prompt_tokens, expected,
                                                stats.context_window)
        if stats.prompt_tokens and not stats.prompt_truncated:
            shared().estimator.observe(self.host, self.model, texts, stats.prompt_tokens)

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return http.request(method, self._base_url + path, timeout=self.timeout,
                            unreachable_hint=UNREACHABLE_HINT, backend="Ollama",
                            host=self.host, **kwargs)

    def _status_error(self, response: requests.Response) -> BackendStatusError:
        text = http.error_text(response)
        status = response.status_code
        if status == 404 and "json" in response.headers.get("Content-Type", ""):
            # A JSON 404 is Ollama's "model not found" (its wording changed in v0.12);
            # a plain-text 404 means the route is wrong, e.g. the host is not Ollama.
            return ModelNotFoundError(
                f"Ollama has no model {self.model!r}.",
                hint=self.missing_model_hint(self.model), model=self.model,
                server_message=text, backend="Ollama", host=self.host)
        if status == 400 and any(phrase in text for phrase in CONTEXT_ERRORS):
            return ContextLengthError(
                f"The prompt does not fit {self.model}'s context window on Ollama: {text}",
                hint=CONTEXT_HINT, status_code=status, server_message=text, backend="Ollama",
                host=self.host)
        if status == 400 and ("support thinking" in text or "think value" in text):
            hint = THINKING_HINT
        elif "format" in text and status in (400, 500):
            hint = FORMAT_HINT
        elif status == 503:
            hint = "Ollama is busy with other requests; try again in a moment."
        elif status == 404:
            hint = f"Is {self.host} an Ollama server? Check the host (sidebar or config.yaml)."
        else:
            hint = "That is the server's own message."
        return BackendStatusError(
            f"Ollama answered HTTP {status}: {text}", hint=hint, status_code=status,
            server_message=text, backend="Ollama", host=self.host)


def format_field(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """A structured answer's schema on Ollama's wire: ``format`` (v0.5.0+; before, the field
    is a string and a schema object is refused with HTTP 400)."""
    return {} if schema is None else {"format": dict(schema)}


def sampling_fields(sampling: Sampling) -> dict[str, Any]:
    """``Sampling`` on Ollama's wire: the ``options`` (a repeat penalty of None is not sent,
    so the model's own setting stands: Ollama's default is 1.1) and ``think`` ("" sends
    nothing: from v0.12.4 a thinking model then thinks by default)."""
    options: dict[str, Any] = {"num_predict": sampling.max_tokens,
                               "temperature": sampling.temperature}
    if sampling.repeat_penalty is not None:
        options["repeat_penalty"] = sampling.repeat_penalty
    fields: dict[str, Any] = {"options": options}
    if sampling.think:
        fields["think"] = {THINK_ON: True, THINK_OFF: False}.get(sampling.think, sampling.think)
    return fields


def _record_final_stats(handle: TokenStream, chunk: dict[str, Any]) -> None:
    """Copy the server's figures from the ``done: true`` line (durations are nanoseconds)."""
    stats = handle.stats
    stats.done_reason = chunk.get("done_reason") or stats.done_reason
    stats.prompt_tokens = chunk.get("prompt_eval_count")
    stats.output_tokens = chunk.get("eval_count")

    def seconds(key: str) -> float | None:
        value = chunk.get(key)
        return value * _NS if isinstance(value, int | float) else None

    stats.server_total_s = seconds("total_duration")
    stats.server_load_s = seconds("load_duration")
    stats.server_prompt_eval_s = seconds("prompt_eval_duration")
    stats.server_eval_s = seconds("eval_duration")


def _texts(prompt: str, system: str) -> list[str]:
    return [message["content"] for message in chat_messages(prompt, system)]


def _version(text: str | None) -> tuple[int, ...]:
    """'0.12.3' -> (0, 12, 3); unknown -> (0,)."""
    parts = []
    for piece in (text or "0").split("-")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _with_latest(model: str) -> str:
    """``model`` with Ollama's default tag when it has none: ``tinyllama`` ->
    ``tinyllama:latest``."""
    model = model.strip()
    return model if not model or ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def _sha256(digest: object) -> str | None:
    """A digest as 'sha256:<hex>' (Ollama's /api/tags gives the bare hex; a
    'sha256:'-prefixed one is kept); None for none."""
    text = str(digest or "").strip()
    if not text:
        return None
    return text if ":" in text else f"sha256:{text}"
