"""Convert the bundled SmolLM2 GGUF into a plain bfloat16 transformers checkpoint for vLLM.

vLLM cannot load this GGUF directly (it fails parsing its config). transformers can: it
dequantizes the weights on load. The loaded model still carries the GGUF's
``quantization_config``, so a plain model is built from the config without it, the state dict
is copied over, and that is saved in bfloat16 with the tokenizer (and its chat template).
The result is checked: greedy decoding must answer "What is the capital of France?" with Paris.

Runs in vLLM's venv (torch, transformers, accelerate, gguf); ``scripts/vllm_cpu_env.py``
calls it: ``python convert_smollm2.py --gguf FILE --out DIR``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

QUESTION = "What is the capital of France?"


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


def check(out: Path) -> str:
    """Greedy answer of the saved checkpoint to the capital question."""
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}],
                                           add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        output = model.generate(**prompt, max_new_tokens=20, do_sample=False)
    return str(tokenizer.decode(output[0][prompt["input_ids"].shape[1]:],
                                skip_special_tokens=True)).strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    convert(args.gguf, args.out)
    answer = check(args.out)
    size = sum(path.stat().st_size for path in args.out.iterdir()) / 1e6
    print(f"converted {args.gguf.name} -> {args.out} ({size:.0f} MB); "
          f"{QUESTION!r} -> {answer!r}", flush=True)
    if "paris" not in answer.lower():
        raise SystemExit(f"the converted model answers {answer!r}, not Paris")
    return 0


if __name__ == "__main__":
    sys.exit(main())
