"""README.md's code, run: every fenced block and every inline command is run by the test named
for it here, or the README says, beside it, that it is "not run by the test suite".

A new block or command that is neither fails ``test_every_block_and_command_is_run_or_marked``.
The tests take their code from README.md (``tests/readme.py``), so the printed code is the
tested code; where they must change it (a free port for 8501, the bundled model for Llama 3),
the change is a named substitution that fails when the README no longer holds its target.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from backends.errors import BackendConnectionError, ModelNotFoundError
from backends.ollama_backend import OllamaBackend
from backends.sampling import Sampling
from backends.status import Status
from studio.pv.library import load_locations, load_system_prompts
from studio.records.batch_files import export_jsonl, import_results
from studio.records.store import RunStore
from studio.runs.batch import BatchSpec
from studio.settings.config import load_config, parse_config
from tests import readme
from tests.readme import ROOT, UNTESTED, block, command
from tests.servers import vllm_real
from tests.servers.base import free_port
from tests.servers.ollama import FakeOllama

# A block is named by its language and a string in its code; a command by its start.
# The value: the test that runs it (``name`` here, or ``path::name``).
BLOCKS = {
    ("bash", "make run"): "test_make_run_serves_the_app",
    ("yaml", "llm:"): "test_the_llm_block_switches_the_backend",
    ("json", '"custom_id"'): "test_the_batch_file_line_is_what_the_export_writes",
    ("bash", "run_batch"):
        "tests/test_vllm_real.py::test_the_readmes_run_batch_lines_run_and_import",
    ("python", "build_processor"): "test_the_ray_data_llm_pipeline_runs_on_vllms_cpu_build",
    ("", "app.py"): "test_the_map_names_every_module",
}
COMMANDS = {
    "make run": "test_make_run_serves_the_app",
    "make test": "test_every_make_target_the_readme_names_exists",
    "make vllm-env": "test_every_make_target_the_readme_names_exists",
    "make bench": "test_every_make_target_the_readme_names_exists",
    ".venv/bin/python -m tests.servers.ollama": "test_the_streaming_test_server_command",
    "vllm run-batch": "tests/test_vllm_real.py::test_vllm_run_batch_is_the_cli_subcommand",
    "cat results/*.json": "test_the_ray_data_llm_pipeline_runs_on_vllms_cpu_build",
    "streamlit run app.py": "test_the_deployment_command_serves_the_app_where_nginx_points",
    "proxy_pass": "test_the_deployment_command_serves_the_app_where_nginx_points",
    "ollama serve": "test_the_ollama_commands_are_the_apps_own_hints",
    "ollama pull": "test_the_ollama_commands_are_the_apps_own_hints",
    "split -l 2000": "test_the_split_command_for_a_big_results_file_is_the_apps_own",
}


def _test_source(name: str) -> str | None:
    """The source of a named test function (``name`` in this file or ``path::name``)."""
    path, _, function = name.rpartition("::")
    source_path = ROOT / path if path else Path(__file__)
    source = source_path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return ast.get_source_segment(source, node)
    return None


def _check_named(what: str, needle: str, test: str) -> str | None:
    source = _test_source(test)
    if source is None:
        return f"{what}: the test {test} does not exist"
    if needle not in source:
        return f"{what}: {test} does not take it from the README ({needle!r} not in its code)"
    return None


def test_every_block_and_command_is_run_or_marked() -> None:
    problems: list[str] = []
    for found in readme.fenced_blocks():
        keys = [key for key in BLOCKS if key[0] == found.language and key[1] in found.code]
        what = f"README.md:{found.line} ({found.language or 'plain'} block)"
        if len(keys) > 1:
            problems.append(f"{what} matches {keys}: make the needles tell the blocks apart")
        elif keys:
            problems.append(_check_named(what, keys[0][1], BLOCKS[keys[0]]) or "")
        elif UNTESTED not in found.before:
            problems.append(f"{what} is run by no test: name one in BLOCKS, or say "
                            f"{UNTESTED!r} in the paragraph before it")
    for key in BLOCKS:
        if not [b for b in readme.fenced_blocks() if b.language == key[0] and key[1] in b.code]:
            problems.append(f"BLOCKS names {key}, which no README block holds any more")
    spans = readme.inline_commands()
    for span in spans:
        starts = [start for start in COMMANDS if span.code.startswith(start)]
        what = f"README.md:{span.line} `{span.code}`"
        if starts:
            problems.append(_check_named(what, starts[0], COMMANDS[starts[0]]) or "")
        elif UNTESTED not in span.paragraph:
            problems.append(f"{what} is run by no test: name one in COMMANDS, or say "
                            f"{UNTESTED!r} in its paragraph")
    for start in COMMANDS:
        if not [span for span in spans if span.code.startswith(start)]:
            problems.append(f"COMMANDS names `{start}`, which the README no longer holds")
    problems = [problem for problem in problems if problem]
    assert not problems, "\n".join(problems)


# -- commands that start a server ------------------------------------------------------------
def _wait_for(url: str, process: subprocess.Popen[bytes], within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited with {process.returncode}"
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {within} s")


def _started(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@pytest.fixture
def app_config(tmp_path: Path) -> dict[str, str]:
    """The environment for an app the README starts: the repo's config.yaml with its history
    in a temporary folder (the command itself is the README's)."""
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    data["app"]["history_db"] = str(tmp_path / "history.sqlite3")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return {"PV_STUDIO_CONFIG": str(path)}


def _make_dry_run(*args: str) -> str:
    """``make -n``: what a target would run, run nothing (the Makefile is the README's)."""
    done = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_run_serves_the_app(app_config: dict[str, str]) -> None:
    """``make run`` installs (a no-op here: the suite runs in that venv), then runs one
    ``streamlit run`` line: that line, on a free port, serves the app."""
    code = block("bash", "make run").code
    assert code.splitlines()[0].startswith("make run")
    assert command("make run") == "make run"
    url = "http://127.0.0.1:8501"
    assert url in code  # the README's own words; the Makefile's default port says the same
    (serve,) = [line for line in _make_dry_run("run").splitlines() if " run app.py" in line]
    assert shlex.split(serve)[-2:] == ["--server.port", "8501"]
    config = (ROOT / ".streamlit" / "config.toml").read_text()
    assert 'address = "127.0.0.1"' in config
    port = free_port()
    (serve,) = [line for line in _make_dry_run("run", f"PORT={port}").splitlines()
                if " run app.py" in line]
    argv = shlex.split(serve)
    assert Path(argv[0]).name == "streamlit"
    process = _started(argv, app_config)
    try:
        _wait_for(f"http://127.0.0.1:{port}/_stcore/health", process)
        page = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
    finally:
        _stop(process)


def test_every_make_target_the_readme_names_exists() -> None:
    """``make test`` is CI's command (.ci/run) and runs ruff, mypy and pytest; ``make
    vllm-env`` and ``make bench`` exist. (``make -n``: nothing runs.)"""
    targets = [span.code.split()[1] for span in readme.inline_commands()
               if span.code.startswith("make ")]
    assert sorted(set(targets)) == ["bench", "run", "test", "vllm-env"]
    for target in targets:
        _make_dry_run(target)
    assert "make test" in block("bash", "make run").code
    assert command("make test") == "make test"
    assert command("make vllm-env") == "make vllm-env"
    assert command("make bench") == "make bench"
    dry = _make_dry_run("test")
    assert "ruff check ." in dry and "mypy" in dry and "-m pytest" in dry
    assert "scripts/vllm_cpu_env.py" in dry  # the vLLM tests' environment, built first
    assert "\nmake test\n" in (ROOT / ".ci" / "run").read_text()


def test_the_streaming_test_server_command() -> None:
    line = command(".venv/bin/python -m tests.servers.ollama")
    assert " --port 11434 " in f"{line} "
    port = free_port()
    argv = shlex.split(line.replace("--port 11434", f"--port {port}"))
    process = _started(argv)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for(f"{url}/api/tags", process, within=30)
        models = [m["name"] for m in requests.get(f"{url}/api/tags", timeout=5).json()["models"]]
        assert models
        stream = OllamaBackend(url, model=models[0], read_timeout=30).stream("Hello", "")
        fragments = list(stream)
        assert len(fragments) > 1 and "".join(fragments).strip()  # it streams
    finally:
        _stop(process)


def test_the_deployment_command_serves_the_app_where_nginx_points(
        app_config: dict[str, str]) -> None:
    line = command("streamlit run app.py")
    upstream = urlsplit(command("proxy_pass").split()[1].rstrip(";"))
    argv = shlex.split(line)
    address = argv[argv.index("--server.address") + 1]
    port = argv[argv.index("--server.port") + 1]
    assert (upstream.hostname, str(upstream.port)) == (address, port)
    free = str(free_port())
    argv[argv.index("--server.port") + 1] = free
    argv[0] = str(Path(sys.executable).with_name("streamlit"))  # the venv's, as `make run`'s
    process = _started(argv, app_config)
    try:
        _wait_for(f"http://{address}:{free}/_stcore/health", process)
    finally:
        _stop(process)


def test_the_ollama_commands_are_the_apps_own_hints(closed_port: int) -> None:
    """The Errors section quotes the fixes the app gives: they are the app's words."""
    assert command("ollama serve") == "ollama serve"
    assert command("ollama pull") == "ollama pull …"
    with pytest.raises(BackendConnectionError) as down:
        OllamaBackend(f"http://127.0.0.1:{closed_port}", model="m",
                      connect_timeout=2).generate("Hi")
    assert "`ollama serve`" in str(down.value)
    with FakeOllama() as server, pytest.raises(ModelNotFoundError) as missing:
        OllamaBackend(server.url, model="no-such:1b", read_timeout=10).generate("Hi")
    assert "`ollama pull no-such:1b`" in str(missing.value)


def test_the_split_command_for_a_big_results_file_is_the_apps_own(tmp_path: Path) -> None:
    """The README's fix for a results file over the import cap is the one the refusal gives,
    and run as printed it makes parts of at most 2,000 lines that add back up to the file."""
    shown = command("split -l 2000")
    assert shown == "split -l 2000 results.jsonl part-"
    with pytest.raises(ValueError) as refused:
        import_results(None, "", "{}\n" * 2_001)
    assert f"({shown})" in str(refused.value)
    lines = [json.dumps({"custom_id": f"pv-{n:04d}"}) + "\n" for n in range(4_500)]
    (tmp_path / "results.jsonl").write_text("".join(lines))
    subprocess.run(shlex.split(shown), cwd=tmp_path, check=True, timeout=30)
    parts = sorted(tmp_path.glob("part-*"))
    assert [len(part.read_text().splitlines()) for part in parts] == [2_000, 2_000, 500]
    assert "".join(part.read_text() for part in parts) == "".join(lines)


# -- configuration and files -------------------------------------------------------------------
def test_the_llm_block_switches_the_backend(tmp_path: Path) -> None:
    """config.yaml with the README's ``llm:`` lines in its ``llm:`` block loads as vLLM, the
    rest of the file unchanged."""
    shown = yaml.safe_load(block("yaml", "llm:").code)
    assert list(shown) == ["llm"]
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    before = load_config(ROOT / "config.yaml")
    data["llm"].update(shown["llm"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    settings = load_config(path)
    assert before.backend != "vllm" and settings.backend == "vllm"
    assert settings.selected.model == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert settings.selected.host == "http://localhost:8000"
    assert settings.backends["ollama"] == before.backends["ollama"]
    assert parse_config(shown).backend == "vllm"  # alone too: every other key has a default


def test_the_batch_file_line_is_what_the_export_writes() -> None:
    """The README's line is the export's first line at the app's defaults, messages aside."""
    shown = json.loads(block("json", '"custom_id"').code.replace("[...]", "null"))
    defaults = load_config(ROOT / "config.yaml")
    spec = BatchSpec(backend="vllm", host="http://localhost:8000", model="smollm2",
                     sampling=Sampling(max_tokens=defaults.max_tokens,
                                       temperature=defaults.temperature),
                     scenarios=load_locations(), system=next(iter(load_system_prompts().values())))
    first = json.loads(export_jsonl(spec).splitlines()[0])
    assert [m["role"] for m in first["body"]["messages"]] == ["system", "user"]
    first["body"]["messages"] = None
    assert first == shown
    assert list(first) == list(shown) and list(first["body"]) == list(shown["body"])


def test_the_map_names_every_module() -> None:
    """'How it fits together': every file it names exists, and it names every module of the
    packages it details (their subpackages too: a name indented under a folder is in it)."""
    named: set[Path] = set()
    folders: list[str] = []  # the folder at each depth of indentation (two spaces)
    for line in block("", "app.py").code.splitlines():
        if not line.strip() or line.startswith(" " * 6):
            continue  # a description's second line
        word = line.split()[0]
        depth = (len(line) - len(line.lstrip())) // 2
        path = ROOT.joinpath(*folders[:depth], word)
        folders[depth:] = [word] if word.endswith("/") else []
        if word.endswith((".py", "/")):
            assert path.exists(), f"the map names {word}, which is not in the repository"
            named.add(path)
    for package in ("backends", "studio", "ui"):
        for module in sorted((ROOT / package).rglob("*.py")):
            code = ast.parse(module.read_text(encoding="utf-8")).body
            if module.stem != "__init__" or len(code) > 1:  # more than a docstring
                assert module in named, f"{module.relative_to(ROOT)} is not in the map"


# -- the Ray Data LLM pipeline, on vLLM's CPU build ------------------------------------------
# What the test gives vLLMEngineProcessorConfig in place of the README's values: one CPU.
RAY_CPU_CONFIG = {"model_source": str(vllm_real.MODEL), "concurrency": 1,
                  "placement_group_config": {"bundles": [{"CPU": 1}]}}
RAY_ENGINE = {"max_model_len": 4096, "enforce_eager": True}
RAY_ROWS, RAY_MAX_TOKENS = 3, 8
# Before the README's code: a local Ray with enough logical CPUs for its six stages (each
# stage's actor takes one; vLLM binds its own threads), a small object store.
RAY_PRELUDE = """import ray
ray.init(num_cpus=8, include_dashboard=False, object_store_memory=200_000_000)
"""
RAY_EPILOGUE = "\nray.shutdown()\n"


def ray_pipeline_for_one_cpu(code: str) -> str:
    """The README's block with ``vLLMEngineProcessorConfig(...)``'s arguments swapped for
    ``RAY_CPU_CONFIG`` and ``RAY_ENGINE`` (merged into its ``engine_kwargs``); all else as
    printed. Fails when the README no longer configures what it swaps."""
    tree = ast.parse(code)
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", "") == "vLLMEngineProcessorConfig"]
    assert len(calls) == 1, "the README's pipeline has one vLLMEngineProcessorConfig"
    given = {kw.arg: kw for kw in calls[0].keywords}
    assert {"model_source", "concurrency", "engine_kwargs"} <= set(given)
    engine = {**ast.literal_eval(given["engine_kwargs"].value), **RAY_ENGINE}
    for name, value in {**RAY_CPU_CONFIG, "engine_kwargs": engine}.items():
        if name in given:
            given[name].value = ast.parse(repr(value), mode="eval").body
        else:
            calls[0].keywords.append(ast.keyword(name, ast.parse(repr(value),
                                                                  mode="eval").body))
    return RAY_PRELUDE + ast.unparse(tree) + RAY_EPILOGUE


def _ray_not_ready() -> str | None:
    problem = vllm_real.not_ready_reason()
    if problem:
        return problem
    found = subprocess.run([str(vllm_real.PYTHON), "-c", "import ray.data.llm"],
                           capture_output=True, env=vllm_real.reference_env(), check=False)
    if found.returncode:
        return "Ray Data is not in vLLM's venv: rebuild it with `make vllm-env`"
    return None


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    """Ray's own folder: short (its sockets' paths must fit 107 bytes), removed after."""
    folder = Path(tempfile.mkdtemp(prefix="pv-ray-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_ray_pipeline_swaps_only_the_config_arguments() -> None:
    code = block("python", "build_processor").code
    swapped = ray_pipeline_for_one_cpu(code)
    assert swapped.startswith(RAY_PRELUDE) and swapped.endswith(RAY_EPILOGUE)
    body = swapped.removeprefix(RAY_PRELUDE).removesuffix(RAY_EPILOGUE)

    def without_config(tree: ast.Module) -> str:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == (
                    "vLLMEngineProcessorConfig"):
                node.keywords = []
        return ast.dump(tree)

    assert without_config(ast.parse(body)) == without_config(ast.parse(code))
    assert "meta-llama/Meta-Llama-3-8B-Instruct" not in swapped
    assert "'enforce_eager': True" in swapped and "'max_model_len': 4096" in swapped
    assert "batch_size=16" in swapped  # the README's own, kept


@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_the_ray_data_llm_pipeline_runs_on_vllms_cpu_build(tmp_path: Path,
                                                           ray_tmp: Path) -> None:
    """The README's pipeline on a file the Batch page exports; its output, joined by the
    README's ``cat``, imported: every row back, answered, with token counts that fit."""
    problem = _ray_not_ready()
    if problem:
        pytest.skip(f"Ray Data LLM on vLLM's CPU build: {problem}")
    spec = BatchSpec(backend="vllm", host="http://node:8000", model="smollm2",
                     sampling=Sampling(max_tokens=RAY_MAX_TOKENS, temperature=0.0),
                     scenarios=load_locations()[:RAY_ROWS],
                     system=next(iter(load_system_prompts().values())))
    batch_input = tmp_path / "pv-batch-input.jsonl"
    batch_input.write_text(export_jsonl(spec))
    script = tmp_path / "pipeline.py"
    script.write_text(ray_pipeline_for_one_cpu(block("python", "build_processor").code))
    env = vllm_real.reference_env(VLLM_CPU_KVCACHE_SPACE="1", RAY_TMPDIR=str(ray_tmp),
                                  RAY_USAGE_STATS_ENABLED="0")
    with (tmp_path / "pipeline.log").open("w") as log:
        # Its own process group: Ray's GCS and raylet stay in it, and go with it on a timeout.
        pipeline = subprocess.Popen([str(vllm_real.PYTHON), str(script)], cwd=tmp_path,
                                    env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            returncode = pipeline.wait(timeout=540)
        finally:
            if pipeline.poll() is None:
                os.killpg(pipeline.pid, signal.SIGKILL)
                pipeline.wait(timeout=30)
    output = (tmp_path / "pipeline.log").read_text(errors="replace")
    assert returncode == 0, output[-4000:]
    joined = subprocess.run(["bash", "-c", command("cat results/*.json")], cwd=tmp_path,
                            check=False, capture_output=True, text=True)
    assert joined.returncode == 0, joined.stderr
    store = RunStore(str(tmp_path / "history.sqlite3"))
    imported = import_results(store, batch_input.read_text(),
                              (tmp_path / "results.jsonl").read_text())
    assert imported.missing == []
    assert sorted(row.custom_id for row in imported.rows) == sorted(
        json.loads(line)["custom_id"] for line in batch_input.read_text().splitlines())
    for row in imported.rows:
        assert row.text and row.status in (Status.FINISHED, Status.LENGTH), row.error
        tokens = row.stats.output_tokens or 0
        assert 0 < tokens <= RAY_MAX_TOKENS
        assert (row.status == Status.LENGTH) == (tokens == RAY_MAX_TOKENS)  # finish_reason is true
        assert row.stats.prompt_tokens and row.stats.prompt_tokens > 2000  # the PV prompt
    assert imported.group_id is not None
    runs = store.group_runs(imported.group_id)
    assert len(runs) == RAY_ROWS and all(run.text for run in runs)
