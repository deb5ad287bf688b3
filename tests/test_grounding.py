"""The grounding check on real answer texts: which figures come from the prompt's data."""

from __future__ import annotations

import pytest

from studio.pv.grounding import (
    NOT_GRADED_CUT,
    check,
    check_run,
    context_numbers,
    data_context,
    highlight_not_found,
    not_graded,
)
from studio.pv.library import load_locations
from studio.pv.prompt import build_user_prompt
from studio.records.render import safe_markdown

# The seed's sample San Diego answer (shared/seed/llm-backends.md, "Sample LLM Response"),
# verbatim. Its derived figures (panels, payback, ROI, savings) predate the current prompt.
SAMPLE_ANSWER = """\
## RECOMMENDATION FOR PV PANEL INSTALLATION

### KEY TRENDS AND SEASONAL PATTERNS
*   The household's electricity consumption is relatively stable
    throughout the year (Winter/Summer ratio: 0.94)
*   Average daily consumption: 53.76 kWh
*   Peak weekly max load: 7.79 kW

### PV PANEL SIZING
*   To offset 100% of consumption: ~128 panels needed
*   With EV charging load: ~150 panels
*   Budget-constrained maximum: 31 panels ($15,000 budget)

### PAYBACK PERIOD AND ROI
*   Break-even: ~10.03 years (budget-constrained)
*   ROI (25 yr): 132.15%
*   Expected annual savings: $1,480.42

### RISKS AND CAVEATS
*   Nighttime load ratio: 70.23%
*   Sunlight consistency CV: 0.3141
*   Battery storage may be advisable
"""

# A short prompt of the same shape, for focused cases.
SMALL_PROMPT = """\
## DATA CONTEXT

- Average daily consumption: 53.76 kWh
- Annual consumption: 19,622.40 kWh
- Nighttime load ratio: 70.23%
- Sunlight consistency (coefficient of variation): 0.3141
- Budget: $15,000

## KNOWLEDGE BASE

- A string inverter costs roughly $1,500–$3,000 and lasts 12 years.

## QUESTION

1. How many panels? Quote figures exactly.
"""


@pytest.fixture(scope="module")
def san_diego_prompt() -> str:
    return build_user_prompt(load_locations()[0])


def judged(answer: str, prompt: str) -> dict[str, bool]:
    return {figure.text: figure.grounded for figure in check(answer, prompt).figures}


# -- the real San Diego prompt and the seed's sample answer ---------------------------------
def test_the_real_prompt_holds_the_figures_the_assertions_rely_on(san_diego_prompt: str) -> None:
    context = data_context(san_diego_prompt)
    assert "Location: San Diego, CA" in context
    for quoted in ("53.76 kWh", "Winter/Summer consumption ratio: 0.94", "7.79 kW", "70.23%",
                   "0.3141", "Budget: $15,000", "31 panels", "ROI (25 yr)"):
        assert quoted in context
    for derived in ("Panels to offset 100% of consumption: 30 panels", "Break-even: 4.92 years",
                    "ROI (25 yr): 408.08%", "Expected annual savings: $3,024.10"):
        assert derived in context  # the sample answer's 128 / 10.03 / 132.15% / $1,480.42 differ
    assert "KNOWLEDGE BASE" not in context and "QUESTION" not in context


def test_sample_answer_figures_grounded_and_not_found(san_diego_prompt: str) -> None:
    report = check(SAMPLE_ANSWER, san_diego_prompt)
    texts = [figure.text for figure in report.figures]
    # Every figure, in order; no list numbering, no words taken for numbers.
    assert texts == ["0.94", "53.76 kWh", "7.79 kW", "100%", "128 panels", "150 panels",
                     "31 panels", "$15,000", "10.03 years", "25 yr", "132.15%", "$1,480.42",
                     "70.23%", "0.3141"]
    verdict = {figure.text: figure.grounded for figure in report.figures}
    for grounded in ("0.94", "53.76 kWh", "7.79 kW", "100%", "31 panels", "$15,000", "25 yr",
                     "70.23%", "0.3141"):
        assert verdict[grounded] is True, grounded
    # The seed's derived figures are not the current prompt's (30 / 35 panels, 4.92 years,
    # 408.08%, $3,024.10); "~150 panels" must not pass through "$15,000" / 100.
    for invented in ("128 panels", "150 panels", "10.03 years", "132.15%", "$1,480.42"):
        assert verdict[invented] is False, invented
    assert [f.text for f in report.not_found] == [
        "128 panels", "150 panels", "10.03 years", "132.15%", "$1,480.42"]
    assert report.summary() == "9 grounded · 5 not found"
    assert report.score == pytest.approx(9 / 14)
    for figure in report.figures:  # offsets point at the figure in the answer
        assert SAMPLE_ANSWER[figure.start:figure.end].strip() == figure.text


def test_ratio_twins_apply_only_to_percentages_and_ratios() -> None:
    # Money, counts and percentages have no twin: $480 is not 4.8, 30 panels not 3,000,
    # 70.23% not 7023%.
    prompt = ("## DATA CONTEXT\n- Installed cost per panel: $480\n- Offset: 30 panels\n"
              "- Nighttime load ratio: 70.23%\n")
    assert judged("A 4.8 kW system, or 3,000 panels; night 7023%.", prompt) == {
        "4.8 kW": False, "3,000 panels": False, "7023%": False}


def test_an_answer_quoting_the_current_prompt_is_fully_grounded(san_diego_prompt: str) -> None:
    answer = ("## RECOMMENDATION\n\n"
              "1. Consumption averages 53.76 kWh a day (19,622.40 kWh a year); winter/summer "
              "ratio 0.94, peak weekly load 7.79 kW.\n"
              "2. Offsetting 100% takes 30 panels (12.00 kW); with the EV, 35 panels "
              "(14.00 kW). The $15,000 budget allows 31 panels (12.40 kW) for $14,880.\n"
              "3. Savings $3,024.10 a year, break-even 4.92 years, ROI 408.08% over 25 years.\n"
              "4. Nighttime load 70.23% (37.76 kWh per day); sunlight CV 0.3141.\n")
    report = check(answer, san_diego_prompt)
    assert report.not_found == []
    assert report.score == 1.0
    assert [f.text for f in report.figures] == [
        "53.76 kWh", "19,622.40 kWh", "0.94", "7.79 kW", "100%", "30 panels", "12.00 kW",
        "35 panels", "14.00 kW", "$15,000", "31 panels", "12.40 kW", "$14,880", "$3,024.10",
        "4.92 years", "408.08%", "25 years", "70.23%", "37.76 kWh", "0.3141"]
    assert report.summary() == "20 grounded · 0 not found"


# -- data_context and context_numbers -------------------------------------------------------
def test_data_context_is_the_section_with_its_subsections_only() -> None:
    prompt = ("Intro 11\n\n## DATA CONTEXT\n- a: 12.5 kWh\n### Sub\n- b: 13%\n"
              "## KNOWLEDGE BASE\n- c: 14 years\n## QUESTION\n- d 15\n")
    context = data_context(prompt)
    assert "12.5 kWh" in context and "### Sub" in context and "13%" in context
    assert "11" not in context and "14 years" not in context and "15" not in context
    assert context_numbers(prompt) == pytest.approx([12.5, 13.0, 0.13])  # 13% is also 0.13


def test_context_numbers_parse_separators_dollars_and_units() -> None:
    numbers = context_numbers(SMALL_PROMPT)
    for value in (53.76, 19622.4, 70.23, 0.7023, 0.3141, 15000.0):
        assert value == pytest.approx(next(n for n in numbers if n == pytest.approx(value)))
    assert 1500.0 not in numbers and 3000.0 not in numbers  # knowledge base, not data
    assert 12.0 not in numbers


def test_a_prompt_without_a_data_context_section_is_used_whole() -> None:
    prompt = "The household uses 53.76 kWh a day and has a $15,000 budget."
    assert data_context(prompt) == prompt
    assert context_numbers(prompt) == pytest.approx([53.76, 15000.0])
    assert judged("About 54 kWh a day; $15,000; 61 kWh.", prompt) == {
        "54 kWh": True, "$15,000": True, "61 kWh": False}


# -- how figures are read and matched -------------------------------------------------------
def test_rounded_figures_are_grounded_at_the_precision_written() -> None:
    answer = "Use 54 kWh, 53.8 kWh, 53.76 kWh; not 53.7 kWh, 53 kWh or 53.77 kWh."
    assert judged(answer, SMALL_PROMPT) == {
        "54 kWh": True, "53.8 kWh": True, "53.76 kWh": True,
        "53.7 kWh": False, "53 kWh": False, "53.77 kWh": False}


def test_percent_and_ratio_twins() -> None:
    answer = "Night share 0.7023 (70.23%, about 70%); CV 31.41% or 0.31; not 0.72 or 71%."
    assert judged(answer, SMALL_PROMPT) == {
        "0.7023": True, "70.23%": True, "70%": True, "31.41%": True, "0.31": True,
        "0.72": False, "71%": False}


def test_a_ratio_below_one_is_grounded_as_a_percentage(san_diego_prompt: str) -> None:
    answer = "Winter use is 94% of summer use (ratio 0.94); performance ratio 80%."
    assert judged(answer, san_diego_prompt) == {"94%": True, "0.94": True, "80%": True}


def test_a_ratio_above_one_is_grounded_as_a_percentage() -> None:
    seattle = next(loc for loc in load_locations() if loc.name == "Seattle, WA")
    prompt = build_user_prompt(seattle)
    assert "Winter/Summer consumption ratio: 1.36" in data_context(prompt)
    answer = "Winter use is 136% of summer use (ratio 1.36)."
    assert judged(answer, prompt) == {"136%": True, "1.36": True}


def test_thousands_separators() -> None:
    answer = "Annual use 19,622.40 kWh (19622.4 kWh, ~19,622 kWh); budget $15,000 or $15000."
    assert judged(answer, SMALL_PROMPT) == {
        "19,622.40 kWh": True, "19622.4 kWh": True, "19,622 kWh": True, "$15,000": True,
        "$15000": True}
    assert [f.value for f in check("$1,480.42 and 1,234,567 W", SMALL_PROMPT).figures] == \
        [1480.42, 1234567.0]


def test_list_numbering_and_small_bare_integers_are_not_judged() -> None:
    answer = ("1. First point: 53.76 kWh\n"
              "2) Second point, with 3 caveats and 2 options\n"
              "  12. Twelfth point\n"
              "#\n"
              "Summary: 4 risks, but 5 panels and 7.5 kW and 42 are stated figures.\n")
    assert judged(answer, SMALL_PROMPT) == {
        "53.76 kWh": True, "5 panels": False, "7.5 kW": False, "42": False}


def test_numbers_inside_code_are_not_judged() -> None:
    answer = ("Run `size --panels 128 --kw 51.2` first.\n\n"
              "```python\npanels = 128\nsavings = 1480.42\n```\n\n"
              "Then install 128 panels for 53.76 kWh.\n")
    report = check(answer, SMALL_PROMPT)
    assert [(f.text, f.grounded) for f in report.figures] == [
        ("128 panels", False), ("53.76 kWh", True)]
    assert answer[report.figures[0].start:report.figures[0].end] == "128 panels"


def test_numbers_glued_to_words_or_versions_are_not_figures() -> None:
    answer = "Model llama3.1 on v0.12.3 with H100 cards; CO2 drops."
    assert check(answer, SMALL_PROMPT).figures == []


def test_an_answer_without_figures() -> None:
    report = check("Battery storage may be advisable; talk to an installer.", SMALL_PROMPT)
    assert report.figures == [] and report.grounded == [] and report.not_found == []
    assert report.score is None
    assert report.summary() == "no figures to check"
    text = safe_markdown("Battery storage may be advisable.")
    assert highlight_not_found(text, report) == text


def test_an_empty_answer() -> None:
    report = check("", SMALL_PROMPT)
    assert report.score is None and report.summary() == "no figures to check"


# -- highlighting in the rendered answer ----------------------------------------------------
def test_highlight_marks_exactly_the_not_found_figures_of_the_sample(
        san_diego_prompt: str) -> None:
    report = check(SAMPLE_ANSWER, san_diego_prompt)
    shown = highlight_not_found(safe_markdown(SAMPLE_ANSWER), report)
    for invented in ("128 panels", "10.03 years", "132.15%"):
        assert f":red-background[{invented}]" in shown
    assert r"Expected annual savings: :red-background[\$1,480.42]" in shown  # escape kept
    assert r"(\$15,000 budget)" in shown  # grounded: left alone, still escaped
    for grounded in ("0.94)", "53.76 kWh\n", "7.79 kW\n", "70.23%\n", "0.3141\n", "31 panels"):
        assert grounded in shown
        assert f"[{grounded}" not in shown
    assert shown.count(":red-background[") == len(report.not_found)
    # Removing the marks gives back the safe markdown unchanged.
    unmarked = shown
    for figure in report.not_found:
        escaped = figure.text.replace("$", "\\$")
        unmarked = unmarked.replace(f":red-background[{escaped}]", escaped, 1)
    assert unmarked == safe_markdown(SAMPLE_ANSWER)


def test_highlight_dollar_figure_keeps_its_escape() -> None:
    answer = "Savings: $1,480.42 a year within the $15,000 budget."
    shown = highlight_not_found(safe_markdown(answer), check(answer, SMALL_PROMPT))
    assert shown == r"Savings: :red-background[\$1,480.42] a year within the \$15,000 budget."


def test_highlight_skips_code_and_marks_the_prose_figure() -> None:
    answer = "Run `size --panels 128` first.\n\nThen install 128 panels and 61 kWh.\n"
    shown = highlight_not_found(safe_markdown(answer), check(answer, SMALL_PROMPT))
    assert shown == ("Run `size --panels 128` first.\n\n"
                     "Then install :red-background[128 panels] and :red-background[61 kWh].\n")


def test_highlight_marks_repeated_figures_each_time() -> None:
    answer = "128 panels now, 128 panels later, 53.76 kWh always."
    report = check(answer, SMALL_PROMPT)
    shown = highlight_not_found(safe_markdown(answer), report)
    assert shown == (":red-background[128 panels] now, :red-background[128 panels] later, "
                     "53.76 kWh always.")


def test_highlight_with_everything_grounded_changes_nothing(san_diego_prompt: str) -> None:
    answer = "Average daily consumption: 53.76 kWh; budget $15,000; night 70.23%."
    text = safe_markdown(answer)
    assert highlight_not_found(text, check(answer, san_diego_prompt)) == text


def test_highlight_does_not_mark_a_list_number() -> None:
    # A not-found bare "10" must mark the figure, not the list number "10." (which would
    # also break the list).
    answer = "10. Sizing\n\nAdd 10 spare fuses.\n"
    shown = highlight_not_found(safe_markdown(answer), check(answer, SMALL_PROMPT))
    assert shown == "10. Sizing\n\nAdd :red-background[10] spare fuses.\n"


def test_highlight_survives_a_figure_removed_by_sanitizing() -> None:
    # "2024" inside a disarmed javascript: link is gone from the display text; the figures
    # after it must still be marked.
    answer = "[see](javascript:alert(2024)) then install 128 panels.\n"
    report = check(answer, SMALL_PROMPT)
    assert [f.text for f in report.not_found] == ["2024", "128 panels"]
    shown = highlight_not_found(safe_markdown(answer), report)
    assert shown == "see (link removed) then install :red-background[128 panels].\n"


def test_an_answer_to_a_cut_prompt_is_not_graded() -> None:
    """The grounding line graded an answer against data the model never saw (the server cut
    the prompt): not graded, and the hook says why for any other check of the figures."""
    prompt = build_user_prompt(load_locations()[0])
    cut = {"prompt_truncated": True, "prompt_tokens": 2_048, "context_window": 2_048}
    report = check_run(SAMPLE_ANSWER, prompt, cut)
    assert report.not_graded == NOT_GRADED_CUT == not_graded(cut) == "prompt cut: not graded"
    assert report.summary() == "prompt cut: not graded"
    assert report.score is None and not report.figures and not report.not_found
    assert highlight_not_found(SAMPLE_ANSWER, report) == SAMPLE_ANSWER
    whole = check_run(SAMPLE_ANSWER, prompt, {"prompt_truncated": False})
    assert not_graded({}) is None and whole.not_graded is None
    assert whole.figures == check(SAMPLE_ANSWER, prompt).figures and whole.figures
