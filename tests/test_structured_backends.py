"""Structured answers on the wire: each backend sends the report's schema its server's way
(Ollama ``format``, vLLM ``response_format`` json_schema on both paths, llama-cpp-python
``response_format`` json_object + schema), and the test servers answer as the real ones do
for their version (evaluation notes section 1). The real servers: tests/test_vllm_real.py and
the embedded test at the end."""

from __future__ import annotations

import json
from typing import Any

import pytest

from backends.embedded_backend import EmbeddedBackend, schema_options
from backends.errors import BackendStatusError, StreamError
from backends.ollama_backend import FORMAT_HINT, OllamaBackend
from backends.sampling import Sampling
from backends.status import Status
from backends.vllm_backend import VLLMBackend, chat_body
from studio.pv.structured import SCHEMA, check, parse_partial, quantities
from tests.servers.ollama import OMITTED, FakeOllama, Script, format_plan
from tests.servers.structured import GENERIC
from tests.servers.vllm import FakeVLLM, completion

PATHS = [pytest.param(True, id="openai-sdk"), pytest.param(False, id="requests")]
BAD_SCHEMA = {"type": "object", "properties": {"x": {"type": "foo"}}}


def ollama_at(server: FakeOllama) -> OllamaBackend:
    return OllamaBackend(server.url, model="llama3.1:8b", read_timeout=10)


# -- Ollama -----------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["0.5.0", "0.5.2", "0.5.4", "0.12.3", "0.30.0"])
def test_ollama_streams_json_that_holds_to_the_schema(version: str) -> None:
    with FakeOllama(version=version) as server:
        stream = ollama_at(server).stream("Size it.", sampling=Sampling(max_tokens=4000),
                                          schema=SCHEMA)
        fragments = list(stream)
    (body,) = server.chat_requests
    assert body["format"] == SCHEMA
    assert len(fragments) > 20  # streamed in pieces in message.content
    verdict = check(stream.text, stream.stats.done_reason or "")
    assert verdict.valid, verdict.problem
    assert len(quantities(verdict.report or {})) == 8  # every quantity, for the figure check
    # The report grows as the pieces come: every prefix reads as a prefix of the object.
    sizes = [len(parse_partial("".join(fragments[:n]))) for n in range(len(fragments) + 1)]
    assert sizes == sorted(sizes) and sizes[-1] == len(SCHEMA["properties"])


def test_ollama_before_0_5_2_loses_the_properties_order() -> None:
    """v0.5.0-0.5.1 decoded the schema through a Go struct (its properties a map): the
    answer comes in key order; #8002 (v0.5.2) kept the schema's."""
    def keys(version: str) -> list[str]:
        plan = format_plan(version, SCHEMA)
        return list(json.loads("".join(plan.pieces or [])))
    assert keys("0.5.1") == sorted(SCHEMA["properties"])
    assert keys("0.5.2") == list(SCHEMA["properties"])


@pytest.mark.parametrize("version", ["0.3.14", "0.4.7"])
def test_ollama_before_0_5_refuses_a_schema_with_its_400(version: str) -> None:
    with FakeOllama(version=version) as server:
        backend = ollama_at(server)
        with pytest.raises(BackendStatusError) as raised:
            backend.generate("Size it.", schema=SCHEMA)
    error = raised.value
    assert error.status_code == 400
    text = ("json: cannot unmarshal object into Go struct field ChatRequest.format of type "
            "string")
    assert error.server_message == text and text in str(error)
    assert error.hint == FORMAT_HINT


@pytest.mark.parametrize("version", ["0.4.7", "0.5.1", "0.5.4"])
def test_ollama_json_alone_gives_generic_json_on_every_version(version: str) -> None:
    plan = format_plan(version, "json")
    assert json.loads("".join(plan.pieces or [])) == GENERIC


def test_ollama_bad_formats_by_version() -> None:
    # up to v0.4.x: another string is ignored (the answer is free text)
    assert format_plan("0.4.7", "xml").pieces is None
    # v0.5.0-0.5.2: a bad value is only logged, the output unconstrained
    assert format_plan("0.5.2", "xml") == format_plan("0.5.2", BAD_SCHEMA) == format_plan(
        "0.5.2", OMITTED)
    # v0.5.3 on: refused, HTTP 500
    refused = format_plan("0.5.3", "xml")
    assert (refused.status, refused.error) == (
        500, 'invalid format: "\\"xml\\""; expected "json" or a valid JSON Schema object')
    assert format_plan("0.5.4", BAD_SCHEMA).error == "invalid JSON schema in format"
    assert format_plan("0.5.4", None) == format_plan("0.5.4", OMITTED)


def test_ollama_500_for_an_invalid_schema_is_shown_with_its_text() -> None:
    with FakeOllama(version="0.5.4") as server, pytest.raises(BackendStatusError) as raised:
        ollama_at(server).generate("Size it.", schema=BAD_SCHEMA)
    assert raised.value.status_code == 500
    assert "invalid JSON schema in format" in str(raised.value)
    assert raised.value.hint == FORMAT_HINT


def test_ollama_cut_by_max_tokens_is_incomplete() -> None:
    with FakeOllama(version="0.12.3") as server:
        stream = ollama_at(server).stream("Size it.", sampling=Sampling(max_tokens=15),
                                          schema=SCHEMA)
        text = stream.read_all()
    assert stream.stats.done_reason == "length"
    verdict = check(str(text), Status.LENGTH)
    assert verdict.problem == "incomplete: cut by max tokens (length)"


def test_ollama_sends_no_format_for_a_markdown_answer(ollama: OllamaBackend,
                                                      fake_ollama: FakeOllama) -> None:
    ollama.generate("Size it.")
    assert "format" not in fake_ollama.chat_requests[0]
    assert fake_ollama.formats == [OMITTED]


def test_ollama_sends_the_scripted_report() -> None:
    report = {key: 7 if SCHEMA["properties"][key].get("type") == "integer" else "x"
              for key in SCHEMA["properties"]}
    with FakeOllama(script=Script(structured=report)) as server:
        text = ollama_at(server).generate("Size it.", schema=SCHEMA)
    assert json.loads(str(text)) == report


# -- vLLM ---------------------------------------------------------------------------------------
def test_vllm_body_has_response_format_json_schema() -> None:
    body = chat_body("smollm2", "Size it.", "", Sampling(), SCHEMA)
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "PVReport", "schema": SCHEMA}}
    assert "response_format" not in chat_body("smollm2", "Size it.", "")


@pytest.mark.parametrize("sdk", PATHS)
@pytest.mark.parametrize("sse", [False, True], ids=["one-piece", "sse"])
def test_vllm_both_paths_send_the_schema_and_read_valid_json(sdk: bool, sse: bool) -> None:
    with FakeVLLM(200, completion("free text")) as server:
        backend = VLLMBackend(server.url, "smollm2", use_openai_sdk=sdk)
        stream = backend.stream("Size it.", sampling=Sampling(max_tokens=4000), sse=sse,
                                schema=SCHEMA)
        text = stream.read_all()
    (body,) = server.chat_requests
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    verdict = check(str(text), stream.stats.done_reason or "")
    assert verdict.valid, verdict.problem


@pytest.mark.parametrize("sdk", PATHS)
def test_vllm_invalid_schema_one_piece_is_a_400(sdk: bool) -> None:
    with FakeVLLM(200, completion("free text")) as server:
        backend = VLLMBackend(server.url, "smollm2", use_openai_sdk=sdk)
        with pytest.raises(BackendStatusError) as raised:
            backend.stream("Size it.", schema=BAD_SCHEMA).read_all()
    assert raised.value.status_code == 400
    assert 'Failed to transform json schema into a grammar: Unsupported type "foo"' \
        in str(raised.value)


@pytest.mark.parametrize("sdk", PATHS)
def test_vllm_invalid_schema_streamed_is_an_error_event_under_200(sdk: bool) -> None:
    with FakeVLLM(200, completion("free text")) as server:
        backend = VLLMBackend(server.url, "smollm2", use_openai_sdk=sdk)
        with pytest.raises(StreamError) as raised:
            backend.stream("Size it.", sse=True, schema=BAD_SCHEMA).read_all()
    assert raised.value.status_code == 200
    assert "Failed to transform json schema into a grammar" in str(raised.value)


def test_fake_vllm_refuses_json_schema_without_its_schema_or_name() -> None:
    import requests

    with FakeVLLM(200, completion("x")) as server:
        def post(response_format: dict[str, Any]) -> requests.Response:
            return requests.post(f"{server.url}/v1/chat/completions", timeout=5, json={
                "model": "smollm2", "messages": [{"role": "user", "content": "hi"}],
                "response_format": response_format})
        missing = post({"type": "json_schema"})
        unnamed = post({"type": "json_schema", "json_schema": {"schema": SCHEMA}})
        generic = post({"type": "json_object"})
    assert missing.status_code == 400 and "'json_schema' field must be provided" in missing.text
    assert unnamed.status_code == 400 and "Field required" in unnamed.text
    assert json.loads(generic.json()["choices"][0]["message"]["content"]) == GENERIC


# -- embedded -------------------------------------------------------------------------------
def test_embedded_sends_json_object_with_the_schema() -> None:
    """llama-cpp-python 0.3.x reads ``json_object`` + ``schema``; ``json_schema`` is ignored
    without a word."""
    assert schema_options(SCHEMA) == {"response_format": {"type": "json_object",
                                                          "schema": SCHEMA}}
    assert schema_options(None) == {}


def test_embedded_answers_structured_for_real() -> None:
    """The bundled SmolLM2 under llama.cpp's grammar: the JSON holds to the schema, or, cut
    by max tokens, the check says so (never the model's words)."""
    backend = EmbeddedBackend()
    stream = backend.stream("Size a PV system for a house using 30 kWh a day.",
                            "Answer with the JSON report.",
                            Sampling(max_tokens=1500, temperature=0.0), schema=SCHEMA)
    text = stream.read_all()
    status = stream.stats.done_reason or ""
    verdict = check(str(text), status)
    partial = parse_partial(str(text))
    assert list(partial) == list(SCHEMA["properties"])[:len(partial)]  # the schema's order
    if status == Status.LENGTH:
        assert verdict.problem == "incomplete: cut by max tokens (length)"
        assert len(partial) >= 1
    else:
        assert verdict.valid, (verdict.problem, str(text)[:500])
