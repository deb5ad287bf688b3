"""Load and validate config.yaml into typed settings.

Every problem becomes one ``ConfigError`` naming the key, so the app can show a clear message
instead of a traceback. Secrets never live in the file: a vLLM API key is read from the
environment variable that ``backends.vllm.api_key_env`` names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from backends.base import InvalidHostError
from backends.http import check_host

REPO_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_DIR / "config.yaml"
CONFIG_ENV = "PV_STUDIO_CONFIG"  # points the app (and tests) at another config file

BACKEND_KINDS = ("ollama", "vllm", "embedded")
DEFAULT_HOSTS = {"ollama": "http://localhost:11434", "vllm": "http://localhost:8000",
                 "embedded": ""}
DEFAULT_MODELS = {"ollama": "llama3.1:8b", "vllm": "meta-llama/Meta-Llama-3-8B-Instruct",
                  "embedded": ""}
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

    def api_key(self) -> str | None:
        """The API key from the environment, if a variable is named and set."""
        return os.environ.get(self.api_key_env) or None if self.api_key_env else None


@dataclass(frozen=True)
class EmbeddedSettings:
    model: str | None = None  # None = the bundled SmolLM2 GGUF
    model_dirs: tuple[str, ...] = ()
    n_ctx: int = 4096


@dataclass(frozen=True)
class Settings:
    backend: str  # the backend that answers (llm.backend)
    backends: dict[str, BackendSettings]
    max_tokens: int = 2048
    temperature: float = 0.2
    connect_timeout: float = 5.0
    read_timeout: float = 600.0
    embedded: EmbeddedSettings = field(default_factory=EmbeddedSettings)
    fallback_to_embedded: bool = True
    history_db: str = str(REPO_DIR / "data" / "history.sqlite3")
    path: str = ""

    @property
    def selected(self) -> BackendSettings:
        return self.backends[self.backend]


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
    root = _mapping(data if data is not None else {}, "the top level", source)
    llm = _mapping(root.get("llm", {}), "llm", source)
    per_backend = _mapping(root.get("backends", {}), "backends", source)
    app = _mapping(root.get("app", {}), "app", source)
    _reject_secrets(root, source)

    for name in per_backend:
        if name not in BACKEND_KINDS:
            raise ConfigError(f"{source}: backends.{name} is not a backend; "
                              f"use one of {', '.join(BACKEND_KINDS)}.")
    kind = llm.get("backend", "ollama")
    if kind not in BACKEND_KINDS:
        raise ConfigError(f"{source}: llm.backend must be one of {', '.join(BACKEND_KINDS)} "
                          f"(got {kind!r}).")

    backends: dict[str, BackendSettings] = {}
    for name in BACKEND_KINDS:
        block = _mapping(per_backend.get(name, {}), f"backends.{name}", source)
        host = _string(block, "host", f"backends.{name}", source, DEFAULT_HOSTS[name])
        model = _string(block, "model", f"backends.{name}", source, DEFAULT_MODELS[name])
        if name == kind:  # the seed's llm.model / llm.host name the selected backend's
            host = _string(llm, "host", "llm", source, host)
            model = _string(llm, "model", "llm", source, model)
        if name != "embedded":
            where = "llm.host" if name == kind and "host" in llm else f"backends.{name}.host"
            _check_url(host, where, source)
        backends[name] = BackendSettings(
            kind=name, host=host.rstrip("/"), model=model,
            api_key_env=_string(block, "api_key_env", f"backends.{name}", source, ""))

    embedded = _mapping(per_backend.get("embedded", {}), "backends.embedded", source)
    dirs = embedded.get("model_dirs", [])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise ConfigError(f"{source}: backends.embedded.model_dirs must be a list of folders.")
    embedded_model = backends["embedded"].model or None

    return Settings(
        backend=kind,
        backends=backends,
        max_tokens=_number(llm, "max_tokens", source, 2048, int, 1, 1_000_000),
        temperature=_number(llm, "temperature", source, 0.2, float, 0.0, 2.0),
        connect_timeout=_number(llm, "connect_timeout", source, 5.0, float, 0.1, 300.0),
        read_timeout=_number(llm, "read_timeout", source, 600.0, float, 1.0, 86_400.0),
        embedded=EmbeddedSettings(
            model=embedded_model, model_dirs=tuple(dirs),
            n_ctx=_number(embedded, "n_ctx", source, 4096, int, 256, 131_072,
                          where="backends.embedded")),
        fallback_to_embedded=_bool(app, "fallback_to_embedded", source, True),
        history_db=str(REPO_DIR / _string(app, "history_db", "app", source,
                                          "data/history.sqlite3")),
        path=source,
    )


def _mapping(value: Any, key: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key} must be a mapping of keys to values "
                          f"(got {type(value).__name__}).")
    return value


def _string(block: dict[str, Any], key: str, where: str, source: str, default: str) -> str:
    value = block.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {where}.{key} must be text (got {value!r}).")
    return value


def _number(block: dict[str, Any], key: str, source: str, default: float, kind: type,
            low: float, high: float, where: str = "llm") -> Any:
    value = block.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or (kind is int and not isinstance(value, int)):
        noun = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{source}: {where}.{key} must be {noun} (got {value!r}).")
    if not low <= value <= high:
        raise ConfigError(f"{source}: {where}.{key} must be between {low:g} and {high:g} "
                          f"(got {value!r}).")
    return kind(value)


def _bool(block: dict[str, Any], key: str, source: str, default: bool) -> bool:
    value = block.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: app.{key} must be true or false (got {value!r}).")
    return value


def _check_url(url: str, key: str, source: str) -> None:
    try:
        check_host(url)
    except InvalidHostError as exc:
        raise ConfigError(f"{source}: {key}: {exc}") from None


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
