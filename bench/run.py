"""Run every benchmark and rewrite docs/BENCHMARKS.md. Benchmarks report; they never fail
the build: a broken one is written down with its error.

    python -m bench.run            # all
    python -m bench.run client     # the ones whose module name contains "client"
"""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import bench_figures
from bench.common import Result

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "BENCHMARKS.md"
# In report order. Each module has run() -> Result.
MODULES = [
    "bench.bench_streaming",   # 1. streaming render: bytes/frames vs st.write_stream; lag
    "bench.bench_stop",        # 2. Stop: click -> server sees the connection close
    "bench.bench_compare",     # 3. Compare: 2-pane wall time / slower pane alone
    "bench.bench_client",      # 4. client overhead vs the official ollama client
    "bench.bench_embedded",    # 5. EmbeddedBackend vs llama-cpp-python directly
    "bench.bench_batch",       # 6. Batch on real vLLM: concurrency 30 vs 1; page vs bare
    "bench.bench_load",        # 7. 10 browser sessions at once
    "bench.bench_evaluate",    # 8. our client vs vllm bench serve; Evaluation on 2 hosts
]


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu})"
            f"{memory}, Python {platform.python_version()}")


def run(selected: list[str]) -> list[tuple[str, Result, float]]:
    results = []
    for name in MODULES:
        if selected and not any(word in name for word in selected):
            continue
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            result: Result = importlib.import_module(name).run()
        except Exception as exc:  # a benchmark that breaks is reported, not fatal
            result = Result(title=name, error=f"{type(exc).__name__}: {exc}")
            traceback.print_exc()
        elapsed = time.monotonic() - started
        for figure in result.figures:
            print(f"   {figure.name}: {figure.shown()} (target {figure.target or '–'})",
                  flush=True)
        results.append((name, result, elapsed))
    return results


def write_report(results: list[tuple[str, Result, float]], command: str) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    lines = [
        "# Benchmarks",
        "",
        "Each figure is a ratio (or a time) of two things measured side by side in the same",
        "run, on the same machine. Benchmarks report; they do not fail the build.",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}",
        f"- Command: `{command}`",
        f"- Commit: {commit or 'uncommitted'}",
        "",
        "| # | Benchmark | Figure | Measured | Target | Met |",
        "|---|---|---|---|---|---|",
    ]
    for number, (_, result, _) in enumerate(results, start=1):
        if result.error or not result.figures:
            lines.append(f"| {number} | {result.title} | – | failed: {result.error or 'no figures'}"
                         " | – | – |")
        for figure in result.figures:
            met = {True: "yes", False: "**no**", None: "–"}[figure.ok]
            lines.append(f"| {number} | {result.title} | {figure.name} | {figure.shown()} | "
                         f"{figure.target or '–'} | {met} |")
    lines.append("")
    for number, (name, result, elapsed) in enumerate(results, start=1):
        lines.append(f"## {number}. {result.title}")
        lines.append("")
        lines.append(f"`{name}`, {elapsed:.0f} s.")
        lines.append("")
        lines.extend(f"- {note}" for note in result.notes)
        if result.error:
            lines.append(f"- Error: `{result.error}`")
        lines.append("")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    kept = REPORT.read_text() if REPORT.exists() else ""
    REPORT.write_text("\n".join(lines))
    if bench_figures.START in kept:  # the figure check's section: not a speed benchmark
        bench_figures.write_section(kept[kept.index(bench_figures.START):
                                         kept.index(bench_figures.END) + len(bench_figures.END)])
    print(f"wrote {REPORT}")


def main() -> None:
    selected = sys.argv[1:]
    results = run(selected)
    if selected:  # a partial run prints, but keeps the full report as it was
        return
    write_report(results, "make bench")


if __name__ == "__main__":
    main()
