"""A separate app process running a Batch, for the kill-and-resume test in tests/test_batch.py.

``python -m tests.batch_child DB URL MODEL COUNT CONCURRENCY``: run the first COUNT preset
locations through the vLLM server at URL, ``CONCURRENCY`` at a time, recording every row in the
RunStore at DB as pages/batch.py does (``launch``: a "batch" group whose spec column is the spec's
JSON, claimed by this process). Prints
``group <id>`` before the first request, then ``done`` at the end; the parent SIGKILLs it
mid-batch.
"""

from __future__ import annotations

import sys

from backends.sampling import Sampling
from backends.vllm_backend import VLLMBackend
from studio.pv.library import load_locations
from studio.records.store import RunStore
from studio.runs.batch import BatchSpec, launch

SYSTEM = "You are a PV sizing analyst."


def main(db: str, url: str, model: str, count: int, concurrency: int) -> None:
    store = RunStore(db)
    spec = BatchSpec(scenarios=load_locations()[:count], backend="vllm", host=url, model=model,
                     system=SYSTEM, sampling=Sampling(max_tokens=256, temperature=0.2),
                     concurrency=concurrency)
    batch = launch(spec, build=lambda: VLLMBackend(url, model=model, read_timeout=30),
                   store=store)
    print(f"group {batch.group_id}", flush=True)
    batch.wait()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
