"""vLLM's own benchmark code, run by vLLM's venv (``scripts/vllm_cpu_env.py``), not the app's.

``python tests/metrics_child.py`` (tests/test_serving.py): ``calculate_metrics`` over given
request timings. It reads a JSON list of cases on stdin, each ``{"requests": [...],
"duration_s", "percentiles", "goodput", "tokenizer"}`` (a request: the fields of vLLM's
``RequestFuncOutput``, times in seconds; ``tokenizer``: count a request's output by its text's
characters when it gives no token count, else vLLM's fallback of 1), and prints a JSON list of
``{"metrics": BenchmarkMetrics as a dict, "output_lens": [...]}``. Whatever
``calculate_metrics`` prints goes to stderr.

``python tests/metrics_child.py client URL MODEL PROMPT MAX_TOKENS`` (tests/test_vllm_real.py):
one greedy request by ``vllm bench serve``'s own client (``--backend openai-chat``; the API key
from ``OPENAI_API_KEY``), printed as JSON: success, ttft, itl, latency, output_tokens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from types import SimpleNamespace
from typing import Any


class CharacterTokenizer:
    """A tokenizer of one token per character: the estimate the test gives ours."""

    def __call__(self, text: str, add_special_tokens: bool = True) -> SimpleNamespace:
        return SimpleNamespace(input_ids=list(text))


def run(case: dict[str, Any]) -> dict[str, Any]:
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncOutput
    from vllm.benchmarks.serve import calculate_metrics

    outputs = [RequestFuncOutput(**request) for request in case["requests"]]
    tokenizer = CharacterTokenizer() if case["tokenizer"] else None
    with contextlib.redirect_stdout(sys.stderr):
        metrics, output_lens = calculate_metrics(
            input_requests=[], outputs=outputs, dur_s=case["duration_s"],
            tokenizer=tokenizer,
            selected_percentiles=case["percentiles"], goodput_config_dict=case["goodput"])
    return {"metrics": dataclasses.asdict(metrics), "output_lens": output_lens}


def request(url: str, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    import asyncio

    import aiohttp
    from vllm.benchmarks.lib.endpoint_request_func import (
        RequestFuncInput,
        async_request_openai_chat_completions,
    )

    async def send() -> Any:
        async with aiohttp.ClientSession() as session:
            return await async_request_openai_chat_completions(RequestFuncInput(
                prompt=prompt, api_url=f"{url}/v1/chat/completions", prompt_len=0,
                output_len=max_tokens, model=model, extra_body={"temperature": 0.0}), session)

    output = asyncio.run(send())
    return {"success": output.success, "ttft": output.ttft, "itl": output.itl,
            "latency": output.latency, "output_tokens": output.output_tokens,
            "error": output.error[-2000:]}


def main() -> None:
    if sys.argv[1:2] == ["client"]:
        url, model, prompt, max_tokens = sys.argv[2:6]
        print(json.dumps(request(url, model, prompt, int(max_tokens))))
        return
    cases = json.load(sys.stdin)
    print(json.dumps([run(case) for case in cases]))


if __name__ == "__main__":
    main()
