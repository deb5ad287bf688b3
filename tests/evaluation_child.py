"""A separate app process running an Evaluation, for the kill-and-resume test in
tests/test_evaluation.py.

``python -m tests.evaluation_child DB URL1 URL2 MODEL COUNT CONCURRENCY``: the first COUNT
preset locations on two choices, vLLM at URL1 and vLLM at URL2 (two servers: they run at the
same time), CONCURRENCY at a time each, every cell recorded in the RunStore at DB as the
Evaluate page does (``launch``: an "evaluation" group whose spec column is the spec's JSON,
claimed by this process). Prints ``group <id>`` before the first request, then ``done`` at
the end; the parent SIGKILLs it mid-way.
"""

from __future__ import annotations

import sys

from backends.sampling import Sampling
from backends.vllm_backend import VLLMBackend
from studio.pv.library import load_locations
from studio.records.store import RunStore
from studio.runs.evaluation import Choice, EvaluationSpec, launch

SYSTEM = "You are a PV sizing analyst."


def build(choice: Choice) -> VLLMBackend:
    return VLLMBackend(choice.host, model=choice.model, read_timeout=30)


def main(db: str, urls: tuple[str, str], model: str, count: int, concurrency: int) -> None:
    store = RunStore(db)
    spec = EvaluationSpec(
        choices=tuple(Choice(backend="vllm", host=url, model=model, concurrency=concurrency,
                             sampling=Sampling(max_tokens=256, temperature=0.2))
                      for url in urls),
        scenarios=load_locations()[:count], system=SYSTEM)
    evaluation = launch(spec, build=build, store=store)
    print(f"group {evaluation.group_id}", flush=True)
    evaluation.wait()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], (sys.argv[2], sys.argv[3]), sys.argv[4], int(sys.argv[5]),
         int(sys.argv[6]))
