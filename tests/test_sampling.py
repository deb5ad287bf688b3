"""Sampling travels as one object: each default defined once, the seed's generate() kept,
and what the sidebar sets reaching every backend's wire intact."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from backends import BACKENDS, DEFAULT_SAMPLING, Backend, Sampling
from studio.pv.library import load_locations
from studio.records.store import RunStore
from studio.runs.batch import BatchSpec
from studio.runs.request import RunParams, RunRequest
from studio.settings.config import Settings, parse_config
from tests.conftest import start_app
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.servers.vllm import FakeVLLM, completion

ROOT = Path(__file__).resolve().parents[1]
APP_CODE = [ROOT / "app.py", *(path for folder in ("backends", "studio", "ui", "pages")
                               for path in sorted((ROOT / folder).rglob("*.py")))]
DEFAULTS = {"max_tokens": 2048, "temperature": 0.2}


def _defaults_given(tree: ast.AST) -> list[tuple[str, Any, int]]:
    """(name, literal, line) wherever the default's literal is given to max_tokens or
    temperature: a parameter's default, a field's default, an assignment, a keyword argument
    (0 max tokens, say, is no default)."""
    found: list[tuple[str, Any, int]] = []

    def note(name: str | None, value: ast.AST | None, line: int) -> None:
        if name not in DEFAULTS or value is None:
            return
        # A literal, or one as a fallback: ``x if x is not None else 2048``, ``x or 0.2``.
        given = [value.body, value.orelse] if isinstance(value, ast.IfExp) else \
            value.values if isinstance(value, ast.BoolOp) else [value]
        found.extend((name, v.value, line) for v in given
                     if isinstance(v, ast.Constant) and v.value == DEFAULTS[name])

    for node in ast.walk(tree):
        if isinstance(node, ast.arguments):
            positional = [*node.posonlyargs, *node.args]
            for arg, default in zip(positional[len(positional) - len(node.defaults):],
                                    node.defaults, strict=True):
                note(arg.arg, default, arg.lineno)
            for arg, kw_default in zip(node.kwonlyargs, node.kw_defaults, strict=True):
                note(arg.arg, kw_default, arg.lineno)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            note(node.target.id, node.value, node.lineno)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name | ast.Attribute):
                    name = target.id if isinstance(target, ast.Name) else target.attr
                    note(name, node.value, node.lineno)
        elif isinstance(node, ast.keyword):
            note(node.arg, node.value, node.lineno)
    return found


def test_each_sampling_default_is_defined_once() -> None:
    """2048 max tokens and temperature 0.2 are written in the Sampling definition only: the
    config, the run parameters, the store and every backend's signatures derive from it."""
    where: dict[tuple[str, Any], list[str]] = {}
    for path in APP_CODE:
        for name, value, line in _defaults_given(ast.parse(path.read_text(encoding="utf-8"))):
            where.setdefault((name, value), []).append(f"{path.relative_to(ROOT)}:{line}")
    assert where.pop(("max_tokens", 2048)) == ["backends/sampling.py:24"]
    assert where.pop(("temperature", 0.2)) == ["backends/sampling.py:25"]
    assert (DEFAULT_SAMPLING.max_tokens, DEFAULT_SAMPLING.temperature) == (2048, 0.2)
    assert (DEFAULT_SAMPLING.repeat_penalty, DEFAULT_SAMPLING.think) == (None, "")


def test_the_defaults_everywhere_come_from_sampling() -> None:
    parsed = parse_config({})
    settings = Settings(backend="ollama", backends={})
    assert parsed.sampling == settings.sampling == DEFAULT_SAMPLING
    assert RunParams("ollama", "h", "m").sampling == DEFAULT_SAMPLING
    classes: list[Any] = [*BACKENDS.values(), Backend]
    for cls in classes:
        fit = inspect.signature(cls.context_fit).parameters["max_tokens"]
        assert fit.default == DEFAULT_SAMPLING.max_tokens


@pytest.mark.parametrize("cls", [Backend, *BACKENDS.values()], ids=lambda c: c.__name__)
def test_the_seeds_generate_signature_stays_as_it_is(cls: type[Backend]) -> None:
    """``generate(prompt, system="", max_tokens=2048, temperature=0.2) -> str``, for callers
    of the backend layer (a structured answer's ``schema`` only by keyword, after them); the
    app's runs take ``stream()`` with one Sampling."""
    generate = inspect.signature(cls.generate)
    assert [(p.name, p.default, p.kind) for p in generate.parameters.values()] == [
        ("self", inspect.Parameter.empty, inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("prompt", inspect.Parameter.empty, inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("system", "", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("max_tokens", 2048, inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("temperature", 0.2, inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("schema", None, inspect.Parameter.KEYWORD_ONLY)]
    assert generate.return_annotation in ("str", "Answer")  # an Answer is a str
    stream = inspect.signature(cls.stream)
    assert [(p.name, p.default) for p in stream.parameters.values()] == [
        ("self", inspect.Parameter.empty), ("prompt", inspect.Parameter.empty),
        ("system", ""), ("sampling", DEFAULT_SAMPLING), ("sse", False), ("schema", None)]
    assert stream.parameters["sse"].kind is inspect.Parameter.KEYWORD_ONLY
    assert stream.parameters["schema"].kind is inspect.Parameter.KEYWORD_ONLY


SET = Sampling(max_tokens=77, temperature=0.35, repeat_penalty=1.15, think="on")


def test_a_sampling_is_kept_whole_by_the_history_and_a_batch_definition(tmp_path: Path) -> None:
    store = RunStore(str(tmp_path / "history.sqlite3"))
    request = RunRequest(backend="ollama", host="http://h:11434", model="m", sampling=SET,
                         system="s", prompt="p")
    stored = store.get(store.start_run(request, "playground"))
    assert stored is not None and stored.sampling == SET
    assert stored.to_request() == request and stored.to_dict()["parameters"] == {
        "max_tokens": 77, "temperature": 0.35, "repeat_penalty": 1.15, "think": "on"}
    location = load_locations()[0]
    spec = BatchSpec(backend="vllm", host="http://h:8000", model="m", sampling=SET,
                     scenarios=[location], system="s")
    text = spec.to_json()
    assert '"max_tokens": 77' in text and '"sampling"' not in text  # the stored format kept
    assert BatchSpec.from_json(text) == spec and spec.request(location).sampling == SET


# -- the sidebar to the wire, on each backend ---------------------------------------------
def set_sidebar(at: AppTest, backend: str, sampling: Sampling) -> AppTest:
    at.sidebar.number_input(key="max_tokens").set_value(sampling.max_tokens)
    at.sidebar.slider(key="temperature").set_value(sampling.temperature)
    at.sidebar.number_input(key="repeat_penalty").set_value(sampling.repeat_penalty)
    if sampling.think:
        at.sidebar.selectbox(key=f"think_{backend}").set_value(sampling.think)
    at = at.run()
    (button,) = [b for b in at.button if b.label == "Generate"]
    at = button.click().run()
    assert not at.exception, at.exception
    assert at.session_state["playground_run"].request.sampling == sampling
    return at


def test_the_sidebars_sampling_reaches_ollamas_wire(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOllama(models=["qwen3:8b"], version="0.18.0",
                    capabilities={"qwen3:8b": ["completion", "thinking"]},
                    script=Script(tokens=tokenize("Install 32 panels."))) as server:
        at = start_app(tmp_path, monkeypatch, "ollama", server.url, "qwen3:8b")
        set_sidebar(at, "ollama", SET)
        body = server.chat_requests[-1]
    options = body["options"]
    assert (options["num_predict"], options["temperature"], options["repeat_penalty"]) == (
        77, 0.35, 1.15)
    assert body["think"] is True


def test_the_sidebars_sampling_reaches_vllms_wire(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeVLLM(200, completion("Install 32 panels.")) as server:
        at = start_app(tmp_path, monkeypatch, "vllm", server.url, "smollm2")
        set_sidebar(at, "vllm", SET)
        body = server.chat_requests[-1]
    assert (body["max_tokens"], body["temperature"], body["repetition_penalty"]) == (
        77, 0.35, 1.15)
    assert body["chat_template_kwargs"] == {"enable_thinking": True}


def test_the_sidebars_sampling_reaches_llama_cpp(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded model has no wire: its call into llama.cpp is recorded instead (it has
    no Think control, the chat template decides)."""
    import llama_cpp

    calls: list[dict[str, Any]] = []
    original = llama_cpp.Llama.create_chat_completion

    def recording(self: Any, **options: Any) -> Any:
        calls.append(options)
        return original(self, **options)

    monkeypatch.setattr(llama_cpp.Llama, "create_chat_completion", recording)
    at = start_app(tmp_path, monkeypatch, "embedded", "", "SmolLM2-135M-Instruct.Q4_1")
    set_sidebar(at, "embedded", Sampling(max_tokens=3, temperature=0.35, repeat_penalty=1.15))
    (call,) = calls
    assert (call["max_tokens"], call["temperature"], call["repeat_penalty"]) == (3, 0.35, 1.15)
