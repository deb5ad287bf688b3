"""What a backend is: the Backend base class (what every backend does, and what it can do,
with the defaults), the options it is built with, a model's state on a server, the Think
settings, and the chat message list every server takes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .context import ContextFit
from .openai_sdk import CLIENT_OPENAI
from .sampling import DEFAULT_SAMPLING, Sampling
from .stream import Answer, PullStream, TokenStream

Schema = Mapping[str, Any]  # a JSON schema, as a dict


@dataclass(frozen=True)
class ModelState:
    """What a server says about itself and one model now: the status line's facts."""

    server_version: str | None = None
    loaded: bool | None = None  # None: the server does not say
    window: int | None = None  # the window the model is loaded with, or serves
    cpu_share: float | None = None  # share of the loaded model held in CPU memory (0..1)
    expires_at: str | None = None  # when an idle model will be unloaded
    # The Think settings this backend and model take (THINK_* values); () for no control.
    think_options: tuple[str, ...] = ()
    note: str = ""  # the backend's own remark (vLLM: the openai SDK asked for, not installed)

    def notes(self) -> list[str]:
        """Short phrases for a status line: version, loaded or cold start, partly on CPU."""
        version = self.server_version or ""
        notes = [f"v{version}" if version[:1].isdigit() else version] if version else []
        if self.loaded is True:
            notes.append("model loaded" + (f" ({self.window:,}-token window)"
                                           if self.window else ""))
        elif self.loaded is False:
            notes.append("model not loaded: the next run starts cold")
        elif self.window:
            notes.append(f"{self.window:,}-token window")
        if self.cpu_share:
            notes.append("on CPU" if self.cpu_share >= 0.999
                         else f"partly on CPU ({self.cpu_share:.0%})")
        if self.note:
            notes.append(self.note)
        return notes


@dataclass(frozen=True)
class BackendOptions:
    """What config.yaml (and the page) set for a backend; each takes what it needs."""

    host: str
    model: str
    api_key: str | None
    connect_timeout: float
    read_timeout: float
    model_dirs: tuple[str, ...]
    n_ctx: int
    num_ctx: int | None
    keep_alive: str | int | None
    vllm_client: str = CLIENT_OPENAI  # how vLLM's chat completions go: openai | requests


class Backend(ABC):
    """What every backend does, and what it can do with the defaults: a backend states only
    what differs. Callers ask a backend (or its class, before one is built) about a
    capability; they never compare its name.
    """

    name: ClassVar[str]  # its key in config.yaml: ollama | vllm | embedded
    label: ClassVar[str]  # its name on the page
    default_model: ClassVar[str]
    default_host: ClassVar[str] = ""  # "" when it needs no server (it runs in this process)
    streams: ClassVar[bool] = True  # stream() yields token by token unless told otherwise
    can_stream_sse: ClassVar[bool] = False  # stream(sse=True) turns a one-piece answer into tokens
    can_pull_models: ClassVar[bool] = False  # its server can fetch a model it lacks: pull()
    # It loads the model a request names on first use (Ollama, which may unload another to
    # make room: two models on one Ollama load back and forth; the embedded backend, which
    # keeps each model it loaded in this process).
    loads_models_on_demand: ClassVar[bool] = False
    model: str
    host: str = ""

    @classmethod
    def from_options(cls, options: BackendOptions) -> Backend:
        """The backend config.yaml describes (``backends.create_backend``)."""
        raise NotImplementedError(f"{cls.label} is not built from config.yaml.")

    def generate(self, prompt: str, system: str = "",
                 max_tokens: int = DEFAULT_SAMPLING.max_tokens,
                 temperature: float = DEFAULT_SAMPLING.temperature, *,
                 schema: Schema | None = None) -> Answer:
        """The seed's interface: the whole answer, stripped, as an ``Answer`` (a ``str``
        carrying ``.stats``); the other settings: the server's. Read from ``stream`` unless
        the backend has a one-piece path of its own."""
        return self.stream(prompt, system, Sampling(max_tokens, temperature),
                           schema=schema).read_all()

    @abstractmethod
    def stream(self, prompt: str, system: str = "", sampling: Sampling = DEFAULT_SAMPLING,
               *, sse: bool = False, schema: Schema | None = None) -> TokenStream:
        """The answer as it comes (``close()`` cancels). ``schema``: a JSON schema the answer
        must follow (a structured answer), sent for the server's constrained decoding; each
        backend maps it to its wire in one place. The server may still fall back to any
        JSON, or cut it: the caller validates what comes back."""

    @abstractmethod
    def list_models(self) -> list[str]: ...

    @abstractmethod
    def context_fit(self, prompt: str, system: str = "",
                    max_tokens: int = DEFAULT_SAMPLING.max_tokens) -> ContextFit:
        """Whether prompt and answer fit the window this run would get (asks the server)."""

    @abstractmethod
    def model_state(self) -> ModelState:
        """The server's version and the model's state (loaded, window, on CPU)."""

    @classmethod
    def missing_model_hint(cls, model: str) -> str:
        """What to do about a model the server does not have."""
        return "Pick one of the listed models."

    @classmethod
    def is_demo_model(cls, model: str) -> bool:
        """Whether this model only demonstrates the pipeline (its figures are no advice)."""
        return False

    @classmethod
    def find_model(cls, model: str, models: Sequence[str]) -> str | None:
        """The server's name for ``model`` in its list ``models`` (Ollama: a name without a
        tag is ``name:latest``), None when it is not there. Every check of a model against a
        server's list goes through this."""
        return model if model in models else None

    def model_digest(self) -> str | None:
        """The model's digest as the server gives it ('sha256:...'): which exact weights
        answered (Ollama's /api/tags; the embedded backend's file). None: the server does
        not report one (vLLM's /v1/models has none). It may ask the server: callers look it
        up away from a run's request (``studio.runs.runner``) and never fail a run on it."""
        return None

    def pull(self, model: str) -> PullStream:
        """Fetch a model the server lacks (``can_pull_models``): its progress, cancellable."""
        raise NotImplementedError(f"{self.label} cannot pull models.")

    def prefix_cache_counters(self) -> tuple[float, float] | None:
        """(tokens looked up, tokens found) in the server's prefix cache since it started;
        None when it does not count them (vLLM's ``/metrics`` does)."""
        return None


# Think settings a run may ask for. "" (the default) sends nothing: the server decides.
THINK_OFF, THINK_ON = "off", "on"
THINK_LEVELS = ("low", "medium", "high")
THINK_SETTINGS = ("", THINK_OFF, THINK_ON, *THINK_LEVELS)


def needs_server(backend: type[Backend] | Backend) -> bool:
    """A backend with a host to reach (the embedded model runs in this process)."""
    return bool(backend.default_host)


def delivery(backend: type[Backend] | Backend, sse: bool = False) -> str:
    """How a run's answer arrives: 'stream', 'stream (SSE)' or 'one piece'."""
    if backend.streams:
        return DELIVERY_STREAM
    return DELIVERY_SSE if sse and backend.can_stream_sse else DELIVERY_ONE_PIECE


DELIVERY_STREAM, DELIVERY_SSE, DELIVERY_ONE_PIECE = "stream", "stream (SSE)", "one piece"


def chat_messages(prompt: str, system: str) -> list[dict[str, str]]:
    """The OpenAI/Ollama chat message list: an optional system message, then the prompt."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return messages
