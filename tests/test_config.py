"""config.yaml loading, validation, and building backends from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends import Backend, EmbeddedBackend, OllamaBackend, VLLMBackend
from studio.runs.connection import PROBE_CONNECT_TIMEOUT, build, from_config
from studio.settings.config import DEFAULT_CONFIG_PATH, ConfigError, load_config, parse_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_the_shipped_config_loads() -> None:
    settings = load_config(DEFAULT_CONFIG_PATH)
    assert settings.backend == "ollama"
    assert settings.selected.host == "http://localhost:11434"
    assert settings.selected.model == "llama3.1:8b"
    assert settings.backends["vllm"].api_key_env == "VLLM_API_KEY"
    assert settings.read_timeout >= 144  # the seed's CPU answers took ~144 s


def test_seed_llm_block_switches_backends_with_config_only() -> None:
    ollama = from_config({"llm": {"backend": "ollama", "model": "llama3.1:8b",
                                  "host": "http://localhost:11434"}})
    vllm = from_config({"llm": {"backend": "vllm",
                                "model": "meta-llama/Meta-Llama-3-8B-Instruct",
                                "host": "http://localhost:8000"}})
    assert isinstance(ollama, OllamaBackend)
    assert (ollama.host, ollama.model) == ("http://localhost:11434", "llama3.1:8b")
    assert isinstance(vllm, VLLMBackend)
    assert (vllm.host, vllm.model) == ("http://localhost:8000",
                                       "meta-llama/Meta-Llama-3-8B-Instruct")


def test_from_config_reads_a_file_and_the_env_variable(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "llm:\n  backend: embedded\n")
    monkeypatch.setenv("PV_STUDIO_CONFIG", str(path))
    assert isinstance(from_config(), EmbeddedBackend)
    assert isinstance(from_config(path), EmbeddedBackend)


def test_llm_block_overrides_only_the_selected_backend() -> None:
    settings = parse_config({
        "llm": {"backend": "vllm", "model": "smollm2", "host": "http://gpu-box:8000/"},
        "backends": {"ollama": {"host": "http://other:11434", "model": "mistral"}},
    })
    assert settings.selected.host == "http://gpu-box:8000"  # trailing slash dropped
    assert settings.selected.model == "smollm2"
    assert settings.backends["ollama"].model == "mistral"


def test_api_key_comes_from_the_named_environment_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = parse_config({"llm": {"backend": "vllm"},
                             "backends": {"vllm": {"api_key_env": "MY_VLLM_KEY"}}})
    monkeypatch.delenv("MY_VLLM_KEY", raising=False)
    assert settings.selected.api_key() is None
    monkeypatch.setenv("MY_VLLM_KEY", "s3cret")
    assert settings.selected.api_key() == "s3cret"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(("text", "expected"), [
    ("llm:\n  backend: olama\n", "llm.backend must be one of ollama, vllm, embedded"),
    ("llm:\n  host: localhost:11434\n",
     "llm.host: 'localhost:11434' has no scheme. Add http:// (or https://): "
     "http://localhost:11434."),
    ("llm:\n  host: ftp://x\n", "llm.host: 'ftp://x' has the wrong scheme"),
    ("llm:\n  host: http://localhost:11434/api\n",
     "llm.host: 'http://localhost:11434/api' has a path; the host is only scheme, name and "
     "port: http://localhost:11434."),
    ("backends:\n  vllm:\n    host: 8000\n", "backends.vllm.host must be text"),
    ("llm:\n  max_tokens: lots\n", "llm.max_tokens must be a whole number"),
    ("llm:\n  max_tokens: 2.5\n", "llm.max_tokens must be a whole number"),
    ("llm:\n  temperature: hot\n", "llm.temperature must be a number"),
    ("llm:\n  temperature: 9\n", "llm.temperature must be between 0 and 2"),
    ("llm:\n  read_timeout: true\n", "llm.read_timeout must be a number"),
    ("llm: [1, 2]\n", "llm must be a mapping"),
    ("- a\n- b\n", "the top level must be a mapping"),
    ("backends:\n  openai: {}\n", "backends.openai is not a backend"),
    ("backends:\n  vllm:\n    api_key: sk-123\n", "backends.vllm.api_key holds a secret"),
    ("llm:\n  backend: ollama\n   model: x\n", "not valid YAML at line"),
    ("backends:\n  embedded:\n    model_dirs: /models\n", "model_dirs must be a list"),
    ("app:\n  fallback_to_embedded: maybe\n", "app.fallback_to_embedded must be true or false"),
    # Nested keys report their full path, down to a list item.
    ("backends:\n  embedded:\n    model_dirs: [models, 3]\n",
     "backends.embedded.model_dirs.1 must be text (got 3)"),
    ("backends:\n  embedded:\n    n_ctx: 10\n",
     "backends.embedded.n_ctx must be between 256 and 131072 (got 10)"),
    ("backends:\n  ollama:\n    host: http://x:11434/api\n",
     "backends.ollama.host: 'http://x:11434/api' has a path"),
    ("backends: 3\n", "backends must be a mapping of keys to values (got int)"),
    ("app:\n  max_prompt_chars: 10\n",
     "app.max_prompt_chars must be between 1000 and 10000000 (got 10)"),
    ("app:\n  max_prompt_chars: lots\n", "app.max_prompt_chars must be a whole number"),
    ("app:\n  max_import_rows: 0\n", "app.max_import_rows must be between 1 and 1000000"),
    ("app:\n  max_queued_per_user: -1\n", "app.max_queued_per_user must be between 0 and"),
    ("app:\n  stop_unwatched_after_s: forever\n",
     "app.stop_unwatched_after_s must be a number"),
    ("llm:\n  host: http://127.0.0.1:1\\@127.0.0.1:2\n", "llm.host: The host has a backslash"),
    ("backends:\n  vllm:\n    client: opneai\n",
     "backends.vllm.client must be openai or requests (got 'opneai')"),
    ("backends:\n  vllm:\n    client: 1\n", "backends.vllm.client must be text (got 1)"),
])
def test_bad_config_gives_one_clear_message_naming_the_key(tmp_path: Path, text: str,
                                                           expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert expected in str(info.value)
    assert "config.yaml" in str(info.value)


@pytest.mark.parametrize(("client", "uses_sdk"), [(None, True), ("openai", True),
                                                 ("requests", False)])
def test_the_vllm_client_is_chosen_in_config(client: str | None, uses_sdk: bool) -> None:
    """backends.vllm.client: the openai SDK (the seed's Path A, the default) or requests;
    every page builds its backend through studio.runs.connection, so every page takes it."""
    vllm = {} if client is None else {"client": client}
    settings = parse_config({"llm": {"backend": "vllm"}, "backends": {"vllm": vllm}})
    assert settings.vllm.client == (client or "openai")
    backend = from_config({"llm": {"backend": "vllm"}, "backends": {"vllm": vllm}})
    assert isinstance(backend, VLLMBackend)
    assert backend.uses_openai_sdk is uses_sdk and backend.client_note == ""
    assert load_config(DEFAULT_CONFIG_PATH).vllm.client == "openai"


@pytest.mark.parametrize("kind", ["ollama", "vllm"])
def test_a_backend_built_from_settings_has_the_configured_timeouts(kind: str) -> None:
    """llm.read_timeout (and connect_timeout) reach every backend that takes them, on every
    way a backend is built: a run, a probe, a batch, a comparison, a pull."""
    def timeout(backend: Backend) -> tuple[float, float]:
        assert isinstance(backend, OllamaBackend | VLLMBackend)
        return backend.timeout

    settings = parse_config({"llm": {"backend": kind, "read_timeout": 1234,
                                     "connect_timeout": 7}})
    assert timeout(from_config({"llm": {"backend": kind}})) == (5.0, 600.0)  # the defaults
    assert timeout(build(settings, kind)) == (7.0, 1234.0)
    assert timeout(build(settings, kind, connect_timeout=PROBE_CONNECT_TIMEOUT)) == (
        PROBE_CONNECT_TIMEOUT, 1234.0)


def test_secret_value_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "backends:\n  vllm:\n    api_key: sk-very-secret\n"))
    assert "sk-very-secret" not in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Cannot read the config file"):
        load_config(tmp_path / "nope.yaml")


def test_empty_file_means_all_defaults(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, ""))
    assert settings.backend == "ollama"
    assert settings.max_tokens == 2048 and settings.temperature == 0.2
    assert settings.fallback_to_embedded is True


def test_the_limits_have_defaults_far_above_real_use_and_can_be_set(tmp_path: Path) -> None:
    shipped, empty = load_config(DEFAULT_CONFIG_PATH), load_config(write(tmp_path, ""))
    for settings in (shipped, empty):
        assert settings.max_prompt_chars == 200_000  # the PV prompt is ~10,000
        assert settings.max_import_rows == 2_000
        assert settings.max_queued_per_user == 4  # a Compare of 4 panes queues whole
        assert settings.stop_unwatched_after_s == 10
    settings = load_config(write(tmp_path, "app:\n  max_prompt_chars: 5000\n"
                                           "  max_import_rows: 30\n  max_queued_per_user: 0\n"
                                           "  stop_unwatched_after_s: 2.5\n"))
    assert (settings.max_prompt_chars, settings.max_import_rows, settings.max_queued_per_user,
            settings.stop_unwatched_after_s) == (5000, 30, 0, 2.5)


def test_only_the_first_problem_is_reported_without_the_pydantic_traceback() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"llm": {"max_tokens": "many", "temperature": "hot"},
                      "app": {"history_db": 5}})
    assert str(info.value) == "config.yaml: llm.max_tokens must be a whole number (got 'many')"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_null_text_means_the_default_and_embedded_ignores_llm_host() -> None:
    settings = parse_config({"llm": {"backend": "embedded", "host": "not a url", "model": None},
                             "backends": {"ollama": {"host": None, "model": None}},
                             "app": {"history_db": None}})
    assert settings.embedded.model == EmbeddedBackend.default_model  # the bundled model
    assert settings.backends["ollama"].host == "http://localhost:11434"
    assert settings.backends["ollama"].model == "llama3.1:8b"
    assert settings.history_db.endswith("history.sqlite3")
