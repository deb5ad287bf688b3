"""The static reports' shared pieces (studio/records/report.py) and the model digests they
show: each backend's ``model_digest()`` (Ollama's /api/tags on the wire-faithful test server,
the embedded model's GGUF file, none from vLLM), recorded with a run's statistics without
slowing or failing it, kept in the history; the parameters table escaped, with the host's
credentials never in it. The reports themselves: tests/test_compare.py and
tests/test_evaluation.py."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import cast

import pytest

from backends import embedded_backend
from backends.base import Backend
from backends.embedded_backend import BUNDLED_NAME, EmbeddedBackend, bundled_model_path
from backends.ollama_backend import OllamaBackend
from backends.sampling import Sampling
from backends.status import Status
from backends.vllm_backend import VLLMBackend
from studio.records.report import (
    NOT_REPORTED,
    Column,
    definitions_html,
    digest_text,
    parameters_html,
    prompts_html,
)
from studio.records.store import RunStore
from studio.runs import runner
from studio.runs.request import AnswerFormat, RunParams, RunRequest
from studio.runs.runner import Recording, Run
from tests.servers.ollama import FakeOllama, Script, tag_digest
from tests.servers.vllm import FakeVLLM, completion

LLAMA = "llama3.1:8b"
HOSTILE = "\"><img src=x onerror=alert(1)><script>alert('x')</script>"


def request(backend: str, host: str, model: str) -> RunRequest:
    return RunRequest(backend=backend, host=host, model=model, system="Be brief.",
                      prompt="Hi", sampling=Sampling(max_tokens=16))


# -- the digests ------------------------------------------------------------------------------
def test_ollama_gives_the_models_digest_from_its_tags(fake_ollama: FakeOllama) -> None:
    assert (OllamaBackend(fake_ollama.url, model=LLAMA).model_digest()
            == f"sha256:{tag_digest(LLAMA)}")
    # A name without a tag is Ollama's name:latest; a model not pulled has none.
    with FakeOllama(models=["tinyllama:latest"]) as server:
        assert (OllamaBackend(server.url, model="tinyllama").model_digest()
                == f"sha256:{tag_digest('tinyllama:latest')}")
        assert OllamaBackend(server.url, model="absent:1b").model_digest() is None


def test_ollama_asks_its_tags_once_for_a_while(fake_ollama: FakeOllama) -> None:
    backend = OllamaBackend(fake_ollama.url, model=LLAMA)
    first = backend.model_digest()
    fake_ollama.models = ["other:1b"]  # listed no more: the kept answer still serves
    assert OllamaBackend(fake_ollama.url, model=LLAMA).model_digest() == first


def test_the_embedded_models_digest_is_its_files_sha256_read_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = bundled_model_path()
    if path is None:
        pytest.skip("the bundled model is not installed")
    expected = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert EmbeddedBackend().model_digest() == expected

    def never(*_: object) -> object:
        raise AssertionError("the file was read again")

    monkeypatch.setattr(embedded_backend.hashlib, "sha256", never)
    assert EmbeddedBackend().model_digest() == expected  # another object, the same process


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"one")
    assert embedded_backend.file_digest(gguf) == "sha256:" + hashlib.sha256(b"one").hexdigest()
    gguf.write_bytes(b"other")
    assert (embedded_backend.file_digest(gguf)
            == "sha256:" + hashlib.sha256(b"other").hexdigest())


def test_vllm_gives_no_digest() -> None:
    with FakeVLLM(200, completion("Hi")) as server:
        assert VLLMBackend(server.url, model="smollm2").model_digest() is None


# -- recorded with the run ----------------------------------------------------------------------
def test_a_run_records_its_models_digest_in_the_history(tmp_path: Path) -> None:
    store = RunStore(str(tmp_path / "history.sqlite3"))
    with FakeOllama(script=Script(tokens=["Hello", "."])) as server:
        run = Run(OllamaBackend(server.url, model=LLAMA), request("ollama", server.url, LLAMA),
                  Recording(store, "playground")).start()
        assert run.wait(10) and run.status == Status.FINISHED
    digest = f"sha256:{tag_digest(LLAMA)}"
    assert run.stats.model_digest == digest
    assert run.to_dict()["statistics"]["model_digest"] == digest
    assert run.run_id is not None
    stored = store.get(run.run_id)
    assert stored is not None and stored.stats["model_digest"] == digest
    assert Run.reopened_from(stored).stats.model_digest == digest


def test_an_embedded_run_records_its_files_digest() -> None:
    path = bundled_model_path()
    if path is None:
        pytest.skip("the bundled model is not installed")
    run = Run(EmbeddedBackend(), request("embedded", "", BUNDLED_NAME)).start()
    assert run.wait(120) and run.error is None
    assert run.stats.model_digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_vllm_run_records_none() -> None:
    with FakeVLLM(200, completion("Hi")) as server:
        run = Run(VLLMBackend(server.url, model="smollm2", use_openai_sdk=False),
                  request("vllm", server.url, "smollm2")).start()
        assert run.wait(10) and run.status == Status.FINISHED
    assert run.stats.model_digest is None


class _Digesting(OllamaBackend):
    """An Ollama whose digest lookup fails, or takes its time."""

    delay_s = 0.0
    fails = False

    def model_digest(self) -> str | None:
        time.sleep(self.delay_s)
        if self.fails:
            raise RuntimeError("the tags broke")
        return "sha256:late"


def test_a_failing_or_slow_digest_neither_fails_nor_holds_up_a_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "DIGEST_WAIT_S", 0.2)
    with FakeOllama(script=Script(tokens=["Hello", "."])) as server:
        failing = _Digesting(server.url, model=LLAMA)
        failing.fails = True
        run = Run(failing, request("ollama", server.url, LLAMA)).start()
        assert run.wait(10)
        assert run.status == Status.FINISHED and run.error is None
        assert run.stats.model_digest is None
        slow = _Digesting(server.url, model=LLAMA)
        slow.delay_s = 5.0
        began = time.monotonic()
        run = Run(slow, request("ollama", server.url, LLAMA)).start()
        assert run.wait(10)
        assert time.monotonic() - began < 3.0
        assert run.status == Status.FINISHED and run.stats.model_digest is None


def test_a_backend_without_the_capability_answers_as_before() -> None:
    class Plain:
        def generate(self, *_: object) -> str:
            return "Hi"

    run = Run(cast(Backend, Plain()), request("ollama", "http://127.0.0.1:9", LLAMA)).start()
    assert run.wait(5) and run.text == "Hi" and run.stats.model_digest is None


# -- the shared pieces ----------------------------------------------------------------------------
def test_digest_text() -> None:
    assert digest_text([None, None]) == NOT_REPORTED == "not reported by the server"
    assert digest_text(["sha256:b", None, "sha256:a", "sha256:b"]) == "sha256:a, sha256:b"


def test_the_parameters_table_escapes_and_hides_credentials() -> None:
    params = RunParams("ollama", "http://ana:s3cret@127.0.0.1:11434", HOSTILE,
                       sampling=Sampling(max_tokens=333, temperature=0.7, repeat_penalty=1.15,
                                         think="high"),
                       answer_format=AnswerFormat.STRUCTURED)
    page = parameters_html([Column(f"1. {HOSTILE}", params, "sha256:abc",
                                   {"Concurrency": "3"}),
                            Column("2. vLLM", RunParams("vllm", "http://h:8000", "m"),
                                   digest_text([None]))])
    assert "<img" not in page and "<script" not in page and "onerror=alert(1)>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "s3cret" not in page and "ana" not in page and "http://127.0.0.1:11434" in page
    for shown in ("Backend", "Ollama", "Model digest", "sha256:abc", NOT_REPORTED,
                  "Max tokens", "333", "Temperature", "0.7", "Repeat penalty", "1.15",
                  "server default", "Think", "high", "Answer format",
                  "Structured (JSON schema)", "Delivery", "stream", "one piece",
                  "Concurrency", "3"):
        assert f"<td>{shown}</td>" in page, shown


def test_prompts_and_definitions_are_literal_text() -> None:
    page = prompts_html(f"System {HOSTILE}", "User ![beacon](http://evil.example/b.png)")
    assert "<img" not in page and "<script" not in page and "<a " not in page
    assert "![beacon](http://evil.example/b.png)" in page  # as typed, never markdown
    assert "<h3>System prompt</h3>" in page and "<h3>User prompt</h3>" in page
    page = definitions_html({HOSTILE: HOSTILE})
    assert "<img" not in page and "<script" not in page
