"""Helpers for the benchmarks: test servers in their own processes, and their CPU time.

A server run in the benchmark's own process would share its GIL with the client being
measured, and the two would slow each other down in ways no real deployment has. So the fake
Ollama runs as a child process (``tests/servers/ollama.py``'s ``FakeOllama``, unchanged),
and ``cpu_seconds(pid)`` tells how busy it was, which says whether it was the bottleneck.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

# Runs in the child: FakeOllama with a script of n short tokens, no delay, until stdin closes.
_FAKE_OLLAMA = """
import sys
from tests.servers.ollama import FakeOllama, Script
count, delay = int(sys.argv[1]), float(sys.argv[2])
tokens = ["w0"] + [f" w{i % 1000}" for i in range(1, count)]
server = FakeOllama(script=Script(tokens=tokens, delay=delay)).start()
print(server.url, flush=True)
sys.stdin.read()
server.stop()
"""
FAKE_OLLAMA_MODEL = "llama3.1:8b"  # one of FakeOllama's default models


def fake_tokens(count: int) -> list[str]:
    """The tokens the child server sends (for checking what a client received)."""
    return ["w0"] + [f" w{i % 1000}" for i in range(1, count)]


class FakeOllamaProcess:
    """``with FakeOllamaProcess(20_000) as server:`` -> ``server.url``, ``server.pid``."""

    def __init__(self, tokens: int, delay: float = 0.0) -> None:
        self.tokens = tokens
        self.delay = delay
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> FakeOllamaProcess:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self._process = subprocess.Popen(
            [sys.executable, "-c", _FAKE_OLLAMA, str(self.tokens), str(self.delay)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
            start_new_session=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"the fake Ollama did not start (it printed {line!r})")
        self.url = line
        return self

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()  # the child stops its server and exits
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the ")" that ends the command name: utime and stime are fields 14 and 15 of the
    # whole line, so 11 and 12 here (state is field 3, index 0).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(action: Callable[[], T]) -> tuple[T, float]:
    """``action()``'s result and its wall time in seconds."""
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def rotations(names: list[str], rounds: int) -> list[str]:
    """Each round runs every variant once, starting one later each round (A B C, B C A,
    C A B, ...), so no variant always runs first or right after the same neighbour."""
    order = []
    for round_index in range(rounds):
        shift = round_index % len(names)
        order.extend(names[shift:] + names[:shift])
    return order
