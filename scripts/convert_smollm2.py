"""Convert the bundled SmolLM2 GGUF into a plain bfloat16 transformers checkpoint for vLLM.

vLLM cannot load this GGUF directly (it fails parsing its config). transformers can: it
dequantizes the weights on load. The loaded model still carries the GGUF's
``quantization_config``, so a plain model is built from the config without it, the state dict
is copied over, and that is saved in bfloat16 with the tokenizer (and its chat template).

The result is checked with a tolerance, never by its words (a 135M model's greedy words change
with the CPU's arithmetic): the next-token distribution of the saved checkpoint must agree with
the float32 model loaded from the GGUF (each one's top token in the other's top 5, and close
log-probabilities on the tokens both rank).

Runs in vLLM's venv (torch, transformers, accelerate, gguf); ``scripts/vllm_cpu_env.py``
calls it: ``python convert_smollm2.py --gguf FILE --out DIR``. The tests call
``python convert_smollm2.py --reference DIR`` for the float32 top tokens of a checkpoint, to
compare with what vLLM serves.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

QUESTION = "What is the capital of France?"
TOP = 5
# Largest log-probability gap allowed on a token both rank in their top 5: bfloat16 weights
# (and a CPU's own kernels) move log-probabilities by a few tenths at most.
TOLERANCE = 1.0


def convert(gguf: Path, out: Path) -> None:
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                  dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.bfloat16
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight may be absent from the state dict and is shared anyway.
    missing = [key for key in missing if key != "lm_head.weight"]
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    if loaded.generation_config is not None:
        plain.generation_config = loaded.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if not tokenizer.chat_template:
        raise SystemExit("the GGUF's tokenizer has no chat template: vLLM's chat route needs one")


def top_tokens(model: Any, tokenizer: Any, question: str = QUESTION,
               top: int = TOP) -> list[tuple[int, float]]:
    """(token id, log-probability) of the ``top`` most likely first tokens of the answer."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                           add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        logits = model(**prompt).logits[0, -1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    values, ids = torch.topk(logprobs, top)
    return [(int(i), float(v)) for i, v in zip(ids, values, strict=True)]


def disagreement(expected: list[tuple[int, float]],
                 got: list[tuple[int, float]]) -> str | None:
    """None when two top-token lists agree within the tolerance, else how they differ."""
    expected_ids, got_ids = dict(expected), dict(got)
    if expected[0][0] not in got_ids or got[0][0] not in expected_ids:
        return f"top tokens differ: {expected} vs {got}"
    for token, logprob in expected:
        if token in got_ids and abs(got_ids[token] - logprob) > TOLERANCE:
            return f"token {token}: log-probability {logprob:.3f} vs {got_ids[token]:.3f}"
    return None


def reference(folder: Path, question: str) -> list[tuple[int, float]]:
    """The float32 top tokens of a saved checkpoint (what vLLM's answer is checked against)."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return top_tokens(model, tokenizer, question)


def check(gguf: Path, out: Path) -> str:
    """Compare the saved checkpoint with the float32 model read from the GGUF."""
    tokenizer = AutoTokenizer.from_pretrained(out)
    original = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                    dtype=torch.float32)
    converted = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    expected, got = top_tokens(original, tokenizer), top_tokens(converted, tokenizer)
    problem = disagreement(expected, got)
    if problem:
        raise SystemExit(f"the converted model does not match the GGUF: {problem}")
    return f"top {TOP} tokens agree (GGUF float32 {expected}, bfloat16 {got})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--reference", type=Path,
                        help="print the float32 top tokens of this checkpoint as JSON")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--against", type=json.loads,
                        help="with --reference: another top list, [[token id, logprob], ...], "
                             "to check against the reference (exit 1 when they disagree)")
    args = parser.parse_args()
    if args.reference:
        expected = reference(args.reference, args.question)
        print(json.dumps(expected))
        if args.against is not None:
            problem = disagreement(expected, [(int(t), float(lp)) for t, lp in args.against])
            if problem:
                print(problem, file=sys.stderr)
                return 1
        return 0
    if not args.gguf or not args.out:
        parser.error("--gguf and --out are required to convert")
    convert(args.gguf, args.out)
    result = check(args.gguf, args.out)
    size = sum(path.stat().st_size for path in args.out.iterdir()) / 1e6
    print(f"converted {args.gguf.name} -> {args.out} ({size:.0f} MB); {result}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
