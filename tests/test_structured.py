"""The structured answer (studio.pv.structured), without Streamlit: its schema (from the one
definition of the quantities), the report it renders, the partial object read while it
streams, the final check and the quantities the figure check reads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from markdown_it import MarkdownIt

from backends.status import Status
from studio.pv import structured
from studio.pv.checks import check_answer
from studio.pv.figures import Verdict as FigureVerdict
from studio.pv.figures import find, reference_for
from studio.pv.library import load_locations
from studio.pv.prompt import build_user_prompt
from studio.pv.quantities import SPECS, Quantity
from studio.pv.structured import (
    ORDER,
    SCHEMA,
    check,
    parse_partial,
    quantities,
    raw_block,
    render,
    shown_text,
)
from studio.records.render import safe_markdown

REPORT: dict[str, Any] = {
    "key_trends": "- Winter load is **1.4x** summer.\n- Peak weekly load 7.79 kW.",
    "offset_panels": 30, "offset_system_kw": 12.3, "ev_panels": None, "ev_system_kw": None,
    "budget_max_panels": 31, "sizing_notes": "A south-facing roof fits 31 panels.",
    "annual_savings_usd": 6543.2, "break_even_years": 2.29, "roi_25y_pct": 990.0,
    "payback_notes": "Budget-bound system.", "risks": "- Nighttime load.\n- Cloudy winters.",
}
TEXT = json.dumps(REPORT)


def test_the_schema_derives_its_quantities_from_the_one_definition() -> None:
    properties = SCHEMA["properties"]
    for quantity, spec in SPECS.items():
        prop = properties[spec.key]
        kinds = [branch["type"] for branch in prop["anyOf"]] if "anyOf" in prop \
            else [prop["type"]]
        number = "integer" if spec.integer else "number"
        nullable = quantity in (Quantity.EV_PANELS, Quantity.EV_KW, Quantity.BREAK_EVEN,
                                Quantity.ROI)
        assert kinds == ([number, "null"] if nullable else [number]), quantity
    for section in ("key_trends", "sizing_notes", "payback_notes", "risks"):
        assert properties[section]["type"] == "string"
    assert SCHEMA["required"] == list(properties) == list(ORDER)
    assert SCHEMA["additionalProperties"] is False
    assert SCHEMA["type"] == "object"


def test_the_properties_read_top_down() -> None:
    """Trends, the sizing quantities, sizing notes, the payback quantities, payback notes,
    risks: the report draws in its own order while the JSON streams."""
    keys = list(SCHEMA["properties"])
    assert keys[0] == "key_trends" and keys[-1] == "risks"
    assert keys.index("budget_max_panels") < keys.index("sizing_notes") \
        < keys.index("annual_savings_usd") < keys.index("payback_notes")


def test_the_schema_keeps_to_what_every_server_enforces() -> None:
    """No keyword xgrammar refuses or llama-cpp-python's converter ignores, no $ref (Ollama
    0.5.0-0.5.1 keep only $defs, properties, required, title and type at the top)."""
    text = json.dumps(SCHEMA)
    for keyword in ("multipleOf", "minimum", "maximum", "uniqueItems", "contains", "$ref",
                    "pattern", "format", "allOf", "default"):
        assert f'"{keyword}"' not in text, keyword
    allowed = {"type", "properties", "required", "title", "additionalProperties"}
    assert set(SCHEMA) <= allowed


def test_render_gives_the_markdown_report_with_units() -> None:
    report = render(REPORT)
    assert report.startswith("## ")
    assert "### Key trends and seasonal patterns" in report
    assert "- **Panels to offset 100%:** 30 panels" in report
    assert "- **System kW to offset 100%:** 12.3 kW" in report
    assert "- **Panels with EV charging:** no EV" in report
    assert "- **Annual savings:** $6,543.2" in report
    assert "- **Break-even years:** 2.29 years" in report
    assert "- **25-year ROI:** 990.0%" in report
    assert "Winter load is **1.4x** summer." in report
    order = [report.index(h) for h in ("Key trends", "System sizing", "Payback and ROI",
                                        "Risks and caveats")]
    assert order == sorted(order)
    assert report.index("Budget maximum") < report.index("A south-facing roof")


def test_a_partial_object_renders_what_it_holds() -> None:
    shown = render({"key_trends": "- Winter heavy", "offset_panels": 30})
    assert "Winter heavy" in shown and "30 panels" in shown
    assert "Payback" not in shown and "Risks" not in shown
    assert render({}).strip() == structured.TITLE


@pytest.mark.parametrize("cut", range(0, len(TEXT) + 1, 7))
def test_every_prefix_parses_to_a_prefix_of_the_object(cut: int) -> None:
    partial = parse_partial("  \n" + TEXT[:cut])
    for key, value in partial.items():
        if isinstance(value, str):
            assert REPORT[key].startswith(value)
        else:
            assert value == REPORT[key], key  # a number shown is never a provisional one
    assert list(partial) == list(REPORT)[:len(partial)]
    render(partial)  # any prefix renders


def test_the_last_number_is_provisional_until_something_follows() -> None:
    assert parse_partial('{"offset_panels": 12') == {}
    assert parse_partial('{"offset_panels": 125,') == {"offset_panels": 125}
    assert parse_partial('{"key_trends": "x", "offset_system_kw": 6.') == {"key_trends": "x"}
    assert parse_partial('{"offset_panels": 125 ') == {"offset_panels": 125}
    assert parse_partial('{"key_trends": "south-fac') == {"key_trends": "south-fac"}


@pytest.mark.parametrize("text", ["", "   ", "not json", "[1, 2", '"a string"'])
def test_nothing_to_show_yet(text: str) -> None:
    assert parse_partial(text) == {}


def test_a_whole_valid_answer() -> None:
    verdict = check(TEXT)
    assert verdict.valid and verdict.report == REPORT and verdict.problem == ""


@pytest.mark.parametrize(("status", "reason"), [
    (Status.STOPPED, "incomplete: stopped"),
    (Status.LENGTH, "incomplete: cut by max tokens (length)"),
    (Status.REPETITION, "incomplete: cut by the repetition guard"),
])
def test_a_cut_answer_is_incomplete(status: Status, reason: str) -> None:
    verdict = check(TEXT[:80], status)
    assert not verdict.valid and verdict.problem == reason


@pytest.mark.parametrize(("text", "starts"), [
    (TEXT[:80], "invalid JSON"),
    ("", "invalid JSON: empty answer"),
    ("Here is my answer: 30 panels.", "invalid JSON"),
    (json.dumps({**REPORT, "roi_25y_pct": float("nan")}), "invalid JSON"),
    (json.dumps({**REPORT, "offset_panels": 30.5}),
     "does not match the schema: offset_panels:"),
    (json.dumps({**REPORT, "offset_panels": "30"}), "does not match the schema: offset_panels"),
    (json.dumps({**REPORT, "offset_panels": True}), "does not match the schema: offset_panels"),
    (json.dumps({k: v for k, v in REPORT.items() if k != "risks"}),
     "does not match the schema: risks: Field required"),
    (json.dumps({**REPORT, "extra": 1}), "does not match the schema: extra:"),
    (json.dumps({**REPORT, "budget_max_panels": None}),
     "does not match the schema: budget_max_panels"),
    (json.dumps([REPORT]), "does not match the schema"),
])
def test_an_invalid_answer_says_why(text: str, starts: str) -> None:
    verdict = check(text, Status.FINISHED)
    assert not verdict.valid
    assert verdict.problem.startswith(starts), verdict.problem


def test_integers_are_numbers_too() -> None:
    assert check(json.dumps({**REPORT, "offset_system_kw": 12})).valid


def test_quantities_for_the_figure_check() -> None:
    values = quantities(REPORT)
    assert values[Quantity.OFFSET_PANELS] == 30.0
    assert values[Quantity.SAVINGS] == 6543.2
    assert values[Quantity.EV_PANELS] is None
    assert set(values) == set(Quantity)
    cut = TEXT.index("offset_system_kw")
    assert quantities(parse_partial(TEXT[:cut])) == {Quantity.OFFSET_PANELS: 30.0}


def test_shown_text_streams_the_report_then_the_raw_text_when_invalid() -> None:
    live, verdict = shown_text(TEXT[:TEXT.index("offset_system")], done=False)
    assert verdict is None and "30 panels" in live
    whole, verdict = shown_text(TEXT, done=True)
    assert verdict is not None and verdict.valid and "Risks and caveats" in whole
    raw, verdict = shown_text(TEXT[:100], done=True, status=Status.LENGTH)
    assert verdict is not None and verdict.problem.startswith("incomplete")
    assert TEXT[:100] in raw and raw.startswith("```")


def test_the_raw_text_stays_literal_whatever_it_holds() -> None:
    text = 'x ``` <img src=x onerror=alert(1)> ```` **bold**'
    block = raw_block(text)
    fence = block.split("text", 1)[0]
    assert fence.count("`") == 5 and block.rstrip().endswith(fence)
    tokens = MarkdownIt().parse(safe_markdown(block))
    assert [token.type for token in tokens] == ["fence"]  # one code block, shown as it is
    assert tokens[0].content == text + "\n"


def test_the_figure_check_reads_the_rendered_report_as_the_fields_say() -> None:
    """The report a structured answer renders reads, through the figure check's markdown
    reader, as the same values its fields hold (the null ones: not stated)."""
    found: dict[Quantity, set[float]] = {}
    for stated in find(render(REPORT)):
        found.setdefault(stated.quantity, set()).add(stated.value)
    stated_fields = {q: v for q, v in quantities(REPORT).items() if v is not None}
    assert {q: {v} for q, v in stated_fields.items()} == found


def test_a_structured_answers_figures_are_graded_from_its_fields() -> None:
    """Both checks of a structured answer: the figure check reads its fields (a cut one: what
    it holds), the grounding check the report it renders."""
    location = load_locations()[0]
    prompt = build_user_prompt(location)
    reference = reference_for(prompt, location)
    assert isinstance(reference, dict)
    right = {**REPORT, **{q.value: (int(v) if q.integer else v) for q, v in reference.items()}}
    for quantity in Quantity:
        if quantity not in reference:
            right[quantity.value] = None
    checked = check_answer(json.dumps(right), prompt, location, structured=True)
    assert checked is not None
    assert checked.figures.score == f"{len(reference)} of {len(reference)}"
    wrong = {**right, "offset_panels": 128}
    checked = check_answer(json.dumps(wrong), prompt, location, structured=True)
    assert checked is not None and [g.quantity for g in checked.figures.of(FigureVerdict.WRONG)] \
        == [Quantity.OFFSET_PANELS]
    cut = json.dumps(right)[:json.dumps(right).index('"offset_system_kw"')]
    checked = check_answer(cut, prompt, location, structured=True)
    assert checked is not None
    assert [g.quantity for g in checked.figures.of(FigureVerdict.RIGHT)] == [
        Quantity.OFFSET_PANELS]
