"""A separate process writing to a RunStore, for tests/test_store.py.

``python -m tests.store_child stream DB URL``: start a run, stream it from the Ollama server at
URL saving progress every 0.2 s, print ``saved <id> <chars>`` after each save (the parent kills
this process with SIGKILL mid-stream).

``python -m tests.store_child write DB N TAG``: write N complete runs, as another app process
would, then print ``done``.
"""

from __future__ import annotations

import sys
import time

from backends.ollama_backend import OllamaBackend
from backends.sampling import Sampling
from backends.status import Status
from studio.records.store import RunStore
from studio.runs.request import RunRequest

PROGRESS_EVERY_S = 0.2


def stream(db: str, url: str) -> None:
    store = RunStore(db)
    request = RunRequest(backend="ollama", host=url, model="llama3.1:8b",
                         system="You are a PV sizing analyst.", prompt="Size a PV system.",
                         sampling=Sampling(max_tokens=4096), preset="san-diego")
    run_id = store.start_run(request, "playground")
    tokens = OllamaBackend(url, model="llama3.1:8b").stream(request.prompt, request.system,
                                                            request.sampling)
    last = time.monotonic()
    for _ in tokens:
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            store.save_progress(run_id, tokens.text)
            last = time.monotonic()
            print(f"saved {run_id} {len(tokens.text)}", flush=True)
    store.finish_run(run_id, tokens.text, Status.FINISHED, None, tokens.stats)
    print("finished", flush=True)


def write(db: str, count: int, tag: str) -> None:
    store = RunStore(db)
    for index in range(count):
        request = RunRequest(backend="ollama", host="http://localhost:11434",
                             model="llama3.1:8b", system="", prompt=f"{tag} prompt {index}")
        run_id = store.start_run(request, "batch", position=index)
        text = ""
        for part in range(5):
            text += f"{tag}-{index}-{part} "
            store.save_progress(run_id, text)
        store.finish_run(run_id, text, Status.FINISHED, None, {"output_tokens": 5})
    print("done", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "stream":
        stream(sys.argv[2], sys.argv[3])
    else:
        write(sys.argv[2], int(sys.argv[3]), sys.argv[4])
