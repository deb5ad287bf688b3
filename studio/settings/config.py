"""Load and validate config.yaml into typed settings.

The file's schema is a set of pydantic models; every problem becomes one ``ConfigError`` naming
the key, so the app can show a clear message instead of a traceback. Secrets never live in the
file: a vLLM API key is read from the environment variable that ``backends.vllm.api_key_env``
names.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from backends import BACKENDS
from backends.embedded_backend import DEFAULT_N_CTX
from backends.errors import InvalidHostError
from backends.http import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, check_host
from backends.openai_sdk import CLIENT_OPENAI, CLIENTS
from backends.sampling import (
    DEFAULT_SAMPLING,
    MAX_TOKENS_RANGE,
    TEMPERATURE_RANGE,
    Sampling,
)

REPO_DIR = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = REPO_DIR / "config.yaml"
CONFIG_ENV = "PV_STUDIO_CONFIG"  # points the app (and tests) at another config file

BackendKind = Literal["ollama", "vllm", "embedded"]
BACKEND_KINDS: tuple[str, ...] = get_args(BackendKind)
# Each backend's defaults live in its class: one default model per backend.
DEFAULT_HOSTS = {kind: BACKENDS[kind].default_host for kind in BACKEND_KINDS}
DEFAULT_MODELS = {kind: BACKENDS[kind].default_model for kind in BACKEND_KINDS}
SECRET_KEYS = ("api_key", "key", "token", "password", "secret")


class ConfigError(ValueError):
    """config.yaml is missing, not YAML, or holds a wrong value; the message names the key."""


@dataclass(frozen=True)
class BackendSettings:
    """Where one backend lives. ``model`` empty = the backend's own default."""

    kind: str
    host: str
    model: str
    api_key_env: str = ""
    hosts: tuple[str, ...] = ()  # more servers of this kind to pick from (shared mode)

    @property
    def allowed_hosts(self) -> tuple[str, ...]:
        """The hosts config.yaml names for this backend: the only ones on a shared server."""
        return tuple(dict.fromkeys((self.host, *self.hosts))) if self.host else self.hosts

    def api_key(self) -> str | None:
        """The API key from the environment, if a variable is named and set."""
        return os.environ.get(self.api_key_env) or None if self.api_key_env else None


@dataclass(frozen=True)
class EmbeddedSettings:
    model: str | None = None  # None = the bundled SmolLM2 GGUF
    model_dirs: tuple[str, ...] = ()
    n_ctx: int = DEFAULT_N_CTX


@dataclass(frozen=True)
class OllamaSettings:
    num_ctx: int | None = None  # None: sized per run ("auto")
    keep_alive: str | int | None = None  # None: the server's (5 minutes unless configured)


@dataclass(frozen=True)
class VLLMSettings:
    client: str = CLIENT_OPENAI  # how chat completions are sent: openai (SDK) | requests


@dataclass(frozen=True)
class Settings:
    backend: str  # the backend that answers (llm.backend)
    backends: dict[str, BackendSettings]
    # the sidebar's first values (llm.max_tokens, llm.temperature)
    max_tokens: int = DEFAULT_SAMPLING.max_tokens
    temperature: float = DEFAULT_SAMPLING.temperature
    connect_timeout: float = CONNECT_TIMEOUT_S
    read_timeout: float = READ_TIMEOUT_S
    embedded: EmbeddedSettings = field(default_factory=EmbeddedSettings)
    ollama: OllamaSettings = field(default_factory=OllamaSettings)
    vllm: VLLMSettings = field(default_factory=VLLMSettings)
    fallback_to_embedded: bool = True
    history_db: str = str(REPO_DIR / "data" / "history.sqlite3")
    prompt_layout: str = "static-first"  # studio.pv.prompt.LAYOUTS
    # A shared server (studio.settings.access): typed hosts allowed? None: only while no login
    # is set.
    allow_custom_hosts: bool | None = None
    admins: tuple[str, ...] = ()  # users who see every run (where names are proven)
    pull_allow: tuple[str, ...] = ()  # models anyone may pull on a shared server
    share_without_login: bool = False  # a share link opens without a login (that item only)
    max_runs_per_backend: int = 0  # fair capacity (studio.runs.capacity); 0: no cap
    max_runs_per_user: int = 0
    max_queued_per_user: int = 4  # runs one user may have waiting for a slot; 0: no cap
    stop_unwatched_after_s: float = 10.0  # a closed tab's runs stop then; 0: never
    max_prompt_chars: int = 200_000  # system + user prompt, far above a real one (PV: ~10,000)
    # rows of one imported batch-results file (studio.records.batch_files)
    max_import_rows: int = 2_000
    path: str = ""

    @property
    def selected(self) -> BackendSettings:
        return self.backends[self.backend]

    @property
    def sampling(self) -> Sampling:
        """How a first run samples: config.yaml's max tokens and temperature, the server's
        repeat penalty and Think."""
        return Sampling(max_tokens=self.max_tokens, temperature=self.temperature)


# --- the schema of config.yaml ------------------------------------------------------------------

def _between(low: float, high: float) -> AfterValidator:
    def check(value: float) -> float:
        if not low <= value <= high:
            raise ValueError(f"must be between {_plain(low)} and {_plain(high)} "
                             f"(got {value!r})")
        return value
    return AfterValidator(check)


def _plain(number: float) -> str:
    """10000000 as written, not 1e+07."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


class _Block(BaseModel):
    # Strict: 2048 is a number and "2048" is not, as before. Keys the app does not read are
    # ignored; text keys may be null, meaning their default.
    model_config = ConfigDict(strict=True)


class _Llm(_Block):
    backend: BackendKind = "ollama"
    model: str | None = None  # the seed's llm.model and llm.host name the selected backend's
    host: str | None = None
    max_tokens: Annotated[int, _between(*MAX_TOKENS_RANGE)] = DEFAULT_SAMPLING.max_tokens
    temperature: Annotated[float, _between(*TEMPERATURE_RANGE)] = DEFAULT_SAMPLING.temperature
    connect_timeout: Annotated[float, _between(0.1, 300.0)] = CONNECT_TIMEOUT_S
    read_timeout: Annotated[float, _between(1.0, 86_400.0)] = READ_TIMEOUT_S

    @field_validator("host")
    @classmethod
    def _host_is_a_url(cls, host: str | None, info: ValidationInfo) -> str | None:
        # The embedded backend has no server, so a host given with it is never used.
        if host is None or info.data.get("backend") == "embedded":
            return host
        return check_host(host)


class _Backend(_Block):
    host: str | None = None
    model: str | None = None
    api_key_env: str | None = None


class _Server(_Backend):
    hosts: list[str] = []

    @field_validator("hosts")
    @classmethod
    def _hosts_are_urls(cls, hosts: list[str]) -> list[str]:
        return [check_host(host) for host in hosts]

    @field_validator("host")
    @classmethod
    def _host_is_a_url(cls, host: str | None) -> str | None:
        return None if host is None else check_host(host)


# A model name as Ollama takes it: [host/][namespace/]model[:tag] (app.pull_allow).
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,254}")

# Go durations as Ollama parses keep_alive ("5m", "1h30m", "-1m"); a number is seconds.
_DURATION = re.compile(r"-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")


class _Ollama(_Server):
    num_ctx: int | str = "auto"
    keep_alive: int | str | None = None

    @field_validator("num_ctx")
    @classmethod
    def _auto_or_tokens(cls, value: int | str) -> int | str:
        if value == "auto" or (isinstance(value, int) and 256 <= value <= 1_048_576):
            return value
        raise ValueError(f"must be auto or a number of tokens from 256 to 1048576 "
                         f"(got {value!r})")

    @field_validator("keep_alive")
    @classmethod
    def _duration(cls, value: int | str | None) -> int | str | None:
        if value is None or isinstance(value, int) or _DURATION.fullmatch(value):
            return value
        raise ValueError(f"must be a duration such as 5m, 1h or -1 (forever), or a number "
                         f"of seconds (got {value!r})")


class _VLLM(_Server):
    client: str = CLIENT_OPENAI

    @field_validator("client")
    @classmethod
    def _known_client(cls, value: str) -> str:
        if value not in CLIENTS:
            raise ValueError(f"must be {' or '.join(CLIENTS)} (got {value!r})")
        return value


class _Embedded(_Backend):
    model_dirs: list[str] = []
    n_ctx: Annotated[int, _between(256, 131_072)] = DEFAULT_N_CTX


class _Backends(_Block):
    model_config = ConfigDict(extra="forbid")  # a misspelt backend must not pass unnoticed
    ollama: _Ollama = _Ollama()
    vllm: _VLLM = _VLLM()
    embedded: _Embedded = _Embedded()


class _App(_Block):
    fallback_to_embedded: bool = True
    history_db: str | None = None
    prompt_layout: str = "static-first"
    allow_custom_hosts: bool | None = None
    admins: list[str] = []
    pull_allow: list[str] = []
    share_without_login: bool = False
    max_runs_per_backend: Annotated[int, _between(0, 1000)] = 0
    max_runs_per_user: Annotated[int, _between(0, 1000)] = 0
    max_queued_per_user: Annotated[int, _between(0, 1000)] = 4
    stop_unwatched_after_s: Annotated[float, _between(0, 3600)] = 10.0
    max_prompt_chars: Annotated[int, _between(1_000, 10_000_000)] = 200_000
    max_import_rows: Annotated[int, _between(1, 1_000_000)] = 2_000

    @field_validator("pull_allow")
    @classmethod
    def _model_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _MODEL_NAME.fullmatch(name):
                raise ValueError(f"must list model names such as qwen3 or qwen3:8b "
                                 f"(letters, digits and . _ - : / only; got {name!r})")
        return names

    @field_validator("prompt_layout")
    @classmethod
    def _known_layout(cls, value: str) -> str:
        if value not in ("static-first", "seed"):  # studio.pv.prompt.LAYOUTS
            raise ValueError(f"must be static-first or seed (got {value!r})")
        return value


class _ConfigFile(_Block):
    llm: _Llm = _Llm()
    backends: _Backends = _Backends()
    app: _App = _App()


# What a key must be, by pydantic error type; {value} is what the file holds.
_MUST = {
    "model_type": "must be a mapping of keys to values (got {kind})",
    "string_type": "must be text (got {value!r})",
    "int_type": "must be a whole number (got {value!r})",
    "float_type": "must be a number (got {value!r})",
    "bool_type": "must be true or false (got {value!r})",
    "list_type": "must be a list (got {value!r})",
    # The schema's one Literal is llm.backend, and its one closed mapping is backends:.
    "literal_error": f"must be one of {', '.join(BACKEND_KINDS)} (got {{value!r}}).",
    "extra_forbidden": f"is not a backend; use one of {', '.join(BACKEND_KINDS)}.",
}


def _config_error(exc: ValidationError, source: str) -> ConfigError:
    """The first problem pydantic found, as one sentence naming the key path."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "the top level"
    ctx = error.get("ctx", {})
    cause = ctx.get("error")  # a ValueError raised by one of the validators above
    if isinstance(cause, InvalidHostError):  # its message is a sentence about the value
        return ConfigError(f"{source}: {where}: {cause}")
    if cause is not None:
        return ConfigError(f"{source}: {where} {cause}")
    value = error["input"]
    template = _MUST.get(error["type"], "is not valid: {msg} (got {value!r})")
    return ConfigError(f"{source}: {where} " + template.format(
        value=value, kind=type(value).__name__, msg=error["msg"], **ctx))


# --- loading --------------------------------------------------------------------------------------

def load_config(path: str | Path | None = None) -> Settings:
    """Read config.yaml (or ``$PV_STUDIO_CONFIG``, or ``path``) and validate it."""
    path = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read the config file {path}: {exc.strerror}.") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{path.name} is not valid YAML{line}: "
                          f"{getattr(exc, 'problem', exc)}.") from exc
    return parse_config(data, source=str(path))


def parse_config(data: Any, source: str = "config.yaml") -> Settings:
    """Validate an already-parsed config mapping."""
    _reject_secrets(data, source)
    try:
        config = _ConfigFile.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise _config_error(exc, source) from None
    llm, app = config.llm, config.app

    backends: dict[str, BackendSettings] = {}
    for name in BACKEND_KINDS:
        block: _Backend = getattr(config.backends, name)
        given: list[_Llm | _Backend] = [llm, block] if name == llm.backend else [block]
        backends[name] = BackendSettings(
            kind=name,
            host=_first([b.host for b in given], DEFAULT_HOSTS[name]),
            model=_first([b.model for b in given], DEFAULT_MODELS[name]),
            api_key_env=block.api_key_env or "",
            hosts=tuple(getattr(block, "hosts", ())))

    embedded, ollama = config.backends.embedded, config.backends.ollama
    return Settings(
        backend=llm.backend,
        backends=backends,
        max_tokens=llm.max_tokens,
        temperature=llm.temperature,
        connect_timeout=llm.connect_timeout,
        read_timeout=llm.read_timeout,
        embedded=EmbeddedSettings(model=backends["embedded"].model or None,
                                  model_dirs=tuple(embedded.model_dirs), n_ctx=embedded.n_ctx),
        ollama=OllamaSettings(
            num_ctx=ollama.num_ctx if isinstance(ollama.num_ctx, int) else None,
            keep_alive=ollama.keep_alive),
        vllm=VLLMSettings(client=config.backends.vllm.client),
        fallback_to_embedded=app.fallback_to_embedded,
        history_db=str(REPO_DIR / (app.history_db or "data/history.sqlite3")),
        prompt_layout=app.prompt_layout,
        allow_custom_hosts=app.allow_custom_hosts,
        admins=tuple(app.admins),
        pull_allow=tuple(app.pull_allow),
        share_without_login=app.share_without_login,
        max_runs_per_backend=app.max_runs_per_backend,
        max_runs_per_user=app.max_runs_per_user,
        max_queued_per_user=app.max_queued_per_user,
        stop_unwatched_after_s=app.stop_unwatched_after_s,
        max_prompt_chars=app.max_prompt_chars,
        max_import_rows=app.max_import_rows,
        path=source,
    )


def _first(values: list[str | None], default: str) -> str:
    """The first value the file gives (null = not given), else the default."""
    return next((value for value in values if value is not None), default)


def _reject_secrets(node: Any, source: str, where: str = "") -> None:
    """A key in the file would end up in git and in logs: only env variable names belong."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if str(key).lower() in SECRET_KEYS and value:
                raise ConfigError(
                    f"{source}: {path} holds a secret. Put it in an environment variable "
                    "and name that variable in backends.vllm.api_key_env instead.")
            _reject_secrets(value, source, path)
