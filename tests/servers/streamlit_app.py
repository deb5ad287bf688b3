"""The real app under ``streamlit run``, for browser tests and benchmarks: a free port,
headless, its own config.yaml and history database in a temporary folder, its log kept there
for the error message if it does not start."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

from tests.servers.base import free_port

REPO = Path(__file__).resolve().parents[2]


class AppServer:
    """``streamlit run SCRIPT`` on a free port, headless, with its own config.yaml (and a
    history database, unless ``history_db`` names one to share) in a temporary folder.
    ``stop()`` ends the process and removes the folder; ``kill()`` is a crash (SIGKILL)."""

    def __init__(self, script: str = "app.py", config: str = "",
                 env: dict[str, str] | None = None, history_db: Path | None = None,
                 secrets: str = "") -> None:
        """``secrets``: a secrets.toml for this app only; ``{url}`` in it becomes the app's
        own URL (an OIDC redirect_uri)."""
        self._tmp = tempfile.TemporaryDirectory(prefix="pv-bench-")
        folder = Path(self._tmp.name)
        data = yaml.safe_load(config) or {}
        self.history_db = history_db or folder / "history.sqlite3"
        data.setdefault("app", {})["history_db"] = str(self.history_db)
        config_path = folder / "config.yaml"
        config_path.write_text(yaml.safe_dump(data))
        secrets_path = folder / "secrets.toml"  # none given: an empty file, never the repo's
        self._log = (folder / "streamlit.log").open("wb")
        # free_port() closes its probe socket before streamlit binds: another process may
        # take the port between the two (several test runs on one machine); then again.
        for _attempt in range(3):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            secrets_path.write_text(secrets.replace("{url}", self.url))
            if self._start(script, config_path, secrets_path, env):
                return
            log = (folder / "streamlit.log").read_text(errors="replace")[-2000:]
            if f"Port {self.port} is not available" not in log:
                break
        self.stop()
        raise RuntimeError(f"streamlit run {script} did not start: {log}")

    def _start(self, script: str, config_path: Path, secrets_path: Path,
               env: dict[str, str] | None) -> bool:
        """Start streamlit on ``self.port``; whether it answers its health check."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", script, "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--server.headless", "true",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
             "--secrets.files", str(secrets_path)],
            cwd=REPO, env={**os.environ, "PV_STUDIO_CONFIG": str(config_path), **(env or {})},
            stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/_stcore/health", timeout=1).text == "ok":
                    return True
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                return False
            time.sleep(0.2)
        return False

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """Kill the app as a crash would (SIGKILL): no clean-up runs in it."""
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        self._tmp.cleanup()

    def __enter__(self) -> AppServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
