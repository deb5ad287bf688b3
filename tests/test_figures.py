"""The figure check: each asked-for quantity found in an answer and graded against the
location's row (studio/pv/figures.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from studio.pv.figures import (
    EDITED,
    NO_DATA_CONTEXT,
    NO_LOCATION,
    Verdict,
    check,
    find,
    grade_values,
    highlight,
)
from studio.pv.grounding import NOT_GRADED_CUT
from studio.pv.grounding import check as grounding_check
from studio.pv.library import load_locations
from studio.pv.location import Location
from studio.pv.prompt import SEED_ORDER, build_user_prompt
from studio.pv.quantities import Quantity
from studio.records.render import safe_markdown
from tests.test_grounding import SAMPLE_ANSWER

Q = Quantity


@pytest.fixture(scope="module")
def san_diego() -> Location:
    return load_locations()[0]


@pytest.fixture(scope="module")
def madrid() -> Location:
    return next(loc for loc in load_locations() if loc.name == "Madrid, ES")


def verdicts(answer: str, location: Location) -> dict[Quantity, Verdict]:
    report = check(answer, build_user_prompt(location), location)
    assert report.not_graded is None, report.not_graded
    return {grade.quantity: grade.verdict for grade in report.grades}


def stated(answer: str) -> list[tuple[Quantity, float, float]]:
    return [(s.quantity, round(s.low, 4), round(s.high, 4)) for s in find(answer)]


# -- the seed's sample answer on the San Diego preset ---------------------------------------
def test_the_seeds_sample_answer_is_graded_against_the_san_diego_row(san_diego: Location) -> None:
    report = check(SAMPLE_ANSWER, build_user_prompt(san_diego), san_diego)
    grades = {grade.quantity: grade for grade in report.grades}
    assert list(grades) == list(Quantity)  # San Diego has an EV: all eight are asked
    assert {q: g.verdict for q, g in grades.items()} == {
        Q.OFFSET_PANELS: Verdict.WRONG, Q.OFFSET_KW: Verdict.MISSING,
        Q.EV_PANELS: Verdict.WRONG, Q.EV_KW: Verdict.MISSING,
        Q.BUDGET_PANELS: Verdict.RIGHT, Q.SAVINGS: Verdict.WRONG,
        Q.BREAK_EVEN: Verdict.WRONG, Q.ROI: Verdict.WRONG}
    offset = grades[Q.OFFSET_PANELS]
    assert (offset.shown and offset.shown.value, offset.reference) == (128, 30)
    assert offset.ratio == pytest.approx(128 / 30)
    assert report.score == "1 of 8"
    summary = report.summary()
    assert summary.startswith("1 of 8 right · panels to offset 100%: 128 stated, 30 in the data "
                              "(4.3x) · panels with EV charging: 150 stated, 35 in the data (4.3x)")
    assert "annual savings: $1,480.42 stated, $3,024.10 in the data (0.5x)" in summary
    assert summary.endswith("2 missing (system kW to offset 100%, system kW with EV charging)")


def test_a_right_number_in_the_wrong_place_is_wrong(san_diego: Location) -> None:
    """31 is in the data (the budget maximum), so grounding passes it; as the panels to offset
    100% it is wrong against 30."""
    answer = "## PV PANEL SIZING\n- To offset 100% of consumption: 31 panels\n"
    prompt = build_user_prompt(san_diego)
    assert grounding_check(answer, prompt).not_found == []
    report = check(answer, prompt, san_diego)
    (offset,) = [g for g in report.grades if g.quantity is Q.OFFSET_PANELS]
    assert offset.verdict is Verdict.WRONG
    assert offset.describe() == "panels to offset 100%: 31 stated, 30 in the data (1.03x)"


def test_a_right_figure_the_data_does_not_quote_is_right(san_diego: Location) -> None:
    """4 years 11 months is the data's 4.92 years, written another way: grounding cannot find
    it, the figure check grades it right."""
    answer = "### Payback\n- Break-even: 4 years and 11 months\n- Savings: about $3.0k a year\n"
    prompt = build_user_prompt(san_diego)
    assert "11 months" in [f.text for f in grounding_check(answer, prompt).not_found]
    graded = verdicts(answer, san_diego)
    assert graded[Q.BREAK_EVEN] is Verdict.RIGHT and graded[Q.SAVINGS] is Verdict.RIGHT


# -- finding quantities in markdown -------------------------------------------------------
@pytest.mark.parametrize(("answer", "expected"), [
    ("- To offset 100% of consumption: **30 panels** (12 kW)",
     [(Q.OFFSET_PANELS, 30, 30), (Q.OFFSET_KW, 12, 12)]),
    ("Offsetting all of your consumption takes 30-31 panels, a 12,000 W array.",
     [(Q.OFFSET_PANELS, 30, 31), (Q.OFFSET_KW, 12, 12)]),
    ("With EV charging you would need ~35 panels (≈14.0 kWp).",
     [(Q.EV_PANELS, 35, 35), (Q.EV_KW, 14, 14)]),
    ("**Annual savings:** $6.5k per year", [(Q.SAVINGS, 6500, 6500)]),
    ("The system pays for itself in 2 years 3 months.", [(Q.BREAK_EVEN, 2.25, 2.25)]),
    ("Break-even after 59 months; the 25-year ROI is 408%.",
     [(Q.BREAK_EVEN, 4.9167, 4.9167), (Q.ROI, 408, 408)]),
    ("| Metric | Value |\n|---|---|\n| Annual savings | USD 3,024 |\n| Payback | 4.9 years |\n",
     [(Q.SAVINGS, 3024, 3024), (Q.BREAK_EVEN, 4.9, 4.9)]),
    ("| Scenario | Panels | System size (kW) |\n|---|---|---|\n| 100% offset | 30 | 12.0 |\n"
     "| With EV | 35 | 14.0 |\n| Budget maximum | 31 | 12.4 |\n",
     [(Q.OFFSET_PANELS, 30, 30), (Q.OFFSET_KW, 12, 12), (Q.EV_PANELS, 35, 35),
      (Q.EV_KW, 14, 14), (Q.BUDGET_PANELS, 31, 31)]),
    ("You need 30 panels to offset 100%, or 35 panels with the EV.",
     [(Q.OFFSET_PANELS, 30, 30), (Q.EV_PANELS, 35, 35)]),
    ("The $15,000 budget at $480 per panel allows at most 31 panels.",
     [(Q.BUDGET_PANELS, 31, 31)]),
    ("The ROI over 25 years is -0.07%.", [(Q.ROI, -0.07, -0.07)]),
], ids=["bullets-bold", "range-watts", "approx-kwp", "k-dollars", "years-months", "months",
        "metric-table", "scenario-table", "or-clause", "budget", "negative-roi"])
def test_quantities_are_found_in_every_style(answer: str,
                                             expected: list[tuple[Quantity, float, float]]) -> None:
    assert stated(answer) == expected


@pytest.mark.parametrize("answer", [
    "Savings of $252 per month, $75,000 over 25 years.",  # monthly and lifetime savings
    "At $0.32/kWh and $480 per panel, a 400 W panel makes 654 kWh.",  # prices, a rating
    "The panels carry a 25-year warranty; payback is well under 10 years.",  # spans, bounds
    "A 13.5 kWh battery (~$12,000) would stretch break-even to ~15 years.",  # another scenario
    "With the 30% tax credit the payback falls to 3.4 years.",  # another scenario
    "The peak weekly max load is 7.79 kW and 70.23% of the load is at night.",  # data
], ids=["monthly-lifetime", "prices", "spans-bounds", "battery", "tax-credit", "data"])
def test_figures_the_question_does_not_ask_for_are_not_read(answer: str) -> None:
    assert stated(answer) == []


def test_the_trends_and_risks_sections_are_not_read() -> None:
    answer = ("### Key trends\n- 30 panels would offset 100% of a flat profile.\n"
              "### Sizing\n- To offset 100%: 30 panels\n"
              "### Risks and caveats\n- Savings may fall to $2,000 a year.\n"
              "In short: 30 panels offset 100% of your use.\n")
    assert stated(answer) == [(Q.OFFSET_PANELS, 30, 30), (Q.OFFSET_PANELS, 30, 30)]


# -- grading --------------------------------------------------------------------------------
def test_right_within_the_precision_the_answer_shows(san_diego: Location) -> None:
    def savings(text: str) -> Verdict:
        return verdicts(f"- Expected annual savings: {text}", san_diego)[Q.SAVINGS]

    # The reference is $3,024.10.
    assert savings("$3,024.10") is Verdict.RIGHT
    assert savings("$3,024") is Verdict.RIGHT
    assert savings("$3k") is Verdict.RIGHT  # +-500
    assert savings("$3,100") is Verdict.WRONG  # 2.5% off, not marked approximate
    assert savings("about $3,100") is Verdict.RIGHT  # "about": 3%
    assert savings("$2,900-$3,100") is Verdict.RIGHT  # a range that holds it
    assert savings("$2,000-$4,000") is Verdict.WRONG  # too wide to state anything


def test_counts_are_exact_even_when_approximate(san_diego: Location) -> None:
    assert verdicts("To offset 100%: ~31 panels", san_diego)[Q.OFFSET_PANELS] is Verdict.WRONG
    assert verdicts("To offset 100%: ~30 panels", san_diego)[Q.OFFSET_PANELS] is Verdict.RIGHT


def test_two_different_values_are_ambiguous_and_one_repeated_is_not(san_diego: Location) -> None:
    twice = "To offset 100%: 30 panels.\n\nIn short: 30 panels offset all your consumption."
    assert verdicts(twice, san_diego)[Q.OFFSET_PANELS] is Verdict.RIGHT
    differ = "To offset 100%: 30 panels.\n\nIn short: 31 panels offset all your consumption."
    report = check(differ, build_user_prompt(san_diego), san_diego)
    (offset,) = [g for g in report.grades if g.quantity is Q.OFFSET_PANELS]
    assert offset.verdict is Verdict.AMBIGUOUS
    assert offset.describe() == "panels to offset 100%: 30 panels and 31 panels stated, 30 in " \
        "the data"
    rounded = "- Break-even: 4.92 years\n\nIn short: it pays back in about 5 years."
    assert verdicts(rounded, san_diego)[Q.BREAK_EVEN] is Verdict.RIGHT


def test_a_household_without_an_ev_is_not_asked_the_ev_figures(madrid: Location) -> None:
    answer = "- Offset 100%: 6 panels\n- With an EV: 11 panels\n"
    graded = verdicts(answer, madrid)
    assert Q.EV_PANELS not in graded and Q.EV_KW not in graded
    assert list(graded) == [Q.OFFSET_PANELS, Q.OFFSET_KW, Q.BUDGET_PANELS, Q.SAVINGS,
                            Q.BREAK_EVEN, Q.ROI]


# -- when the check does not grade ----------------------------------------------------------
def test_an_edited_data_context_is_not_graded_against_stale_values(san_diego: Location) -> None:
    prompt = build_user_prompt(san_diego).replace("Budget: $15,000", "Budget: $20,000")
    report = check(SAMPLE_ANSWER, prompt, san_diego)
    assert report.grades == []
    assert report.not_graded == EDITED.format(name="San Diego, CA")
    assert report.summary() == "the DATA CONTEXT was edited: figures not graded against " \
        "San Diego, CA's data"
    # Either section order, and an edit outside the data context, still grade.
    for same in (build_user_prompt(san_diego, layout=SEED_ORDER),
                 build_user_prompt(san_diego).replace("## QUESTION", "## QUESTION\n\nBe brief.")):
        assert check(SAMPLE_ANSWER, same, san_diego).not_graded is None


def test_no_row_no_context_or_a_cut_prompt_is_not_graded(san_diego: Location) -> None:
    prompt = build_user_prompt(san_diego)
    assert check(SAMPLE_ANSWER, prompt, None).not_graded == NO_LOCATION
    assert check(SAMPLE_ANSWER, "Size PV for my house.", san_diego).not_graded == \
        NO_DATA_CONTEXT
    assert check(SAMPLE_ANSWER, prompt, san_diego,
                 {"prompt_truncated": True}).not_graded == NOT_GRADED_CUT
    other = replace(san_diego, budget_usd=20000)
    assert check(SAMPLE_ANSWER, prompt, other).not_graded == EDITED.format(name="San Diego, CA")


# -- structured answers and display ----------------------------------------------------------
def test_a_structured_answers_fields_are_graded_directly(san_diego: Location) -> None:
    values: dict[Quantity, float | None] = {
        Q.OFFSET_PANELS: 30, Q.OFFSET_KW: 12.0, Q.EV_PANELS: 35, Q.EV_KW: 14.0,
        Q.BUDGET_PANELS: 31, Q.SAVINGS: 3024.10, Q.BREAK_EVEN: 4.92, Q.ROI: 128.0}
    report = grade_values(values, build_user_prompt(san_diego), san_diego)
    assert report.score == "7 of 8"
    assert [g.quantity for g in report.of(Verdict.WRONG)] == [Q.ROI]
    values[Q.EV_KW] = None
    assert grade_values(values, build_user_prompt(san_diego), san_diego).of(
        Verdict.MISSING)[0].quantity is Q.EV_KW


def test_wrong_figures_are_marked_apart_from_figures_not_in_the_data(
        san_diego: Location) -> None:
    prompt = build_user_prompt(san_diego)
    report = check(SAMPLE_ANSWER, prompt, san_diego)
    shown = highlight(safe_markdown(SAMPLE_ANSWER), report, grounding_check(SAMPLE_ANSWER, prompt))
    assert "To offset 100% of consumption: ~:red[~~128 panels~~] " \
        ":red-background[✗ 30 in the data] needed" in shown
    assert r"Expected annual savings: :red[~~\$1,480.42~~] " \
        r":red-background[✗ \$3,024.10 in the data]" in shown  # escapes kept
    assert ":red[~~132.15%~~] :red-background[✗ 408.08% in the data]" in shown
    # The rest is the grounding check's: a figure that is not a quantity, not in the data.
    answer = SAMPLE_ANSWER.replace("Peak weekly max load: 7.79 kW", "Peak weekly max load: 77.9 kW")
    shown = highlight(safe_markdown(answer), report, grounding_check(answer, prompt))
    assert "Peak weekly max load: :red-background[77.9 kW]" in shown
    assert shown.count(":red-background[✗") == 5


def test_each_value_of_an_ambiguous_quantity_is_marked(san_diego: Location) -> None:
    answer = "To offset 100%: 30 panels.\n\nIn short: 31 panels offset all your consumption."
    report = check(answer, build_user_prompt(san_diego), san_diego)
    assert highlight(answer, report) == (
        "To offset 100%: :orange-background[30 panels] :orange[(which?)].\n\nIn short: "
        ":orange-background[31 panels] :orange[(which?)] offset all your consumption.")


def test_the_columns_carry_each_quantity(san_diego: Location) -> None:
    columns = check(SAMPLE_ANSWER, build_user_prompt(san_diego), san_diego).columns()
    assert columns["figures_right"] == "1 of 8"
    assert (columns["offset_panels"], columns["offset_panels_stated"],
            columns["offset_panels_reference"]) == ("wrong", "128 panels", 30)
    assert columns["offset_system_kw"] == "missing"
    assert columns["annual_savings_usd_reference"] == 3024.0996


# -- what an exploratory session found ---------------------------------------------------------
@pytest.mark.parametrize("answer", [
    "### Offset 100% of consumption\n- Panels: 30\n- System size: 12 kW\n"
    "### With EV charging\n- Panels: 35\n- System size: 14 kW\n",
    "- **Scenario 1 – offset 100%**\n  - Panels: 30\n  - System: 12 kW\n"
    "- **Scenario 2 – with the EV**\n  - Panels: 35\n  - System: 14 kW\n",
    "**Offset 100%:**\n30 panels, 12 kW\n\n**With EV charging:**\n35 panels, 14 kW\n",
    "**Offset 100%:** **30** panels (**12** kW)\n\n**With the EV:** **35** panels (14 kW)\n",
], ids=["scenario-headings", "nested-bullets", "label-then-line", "bold-numbers"])
def test_layouts_models_write_are_read(answer: str, san_diego: Location) -> None:
    graded = verdicts(answer, san_diego)
    assert [graded[q] for q in (Q.OFFSET_PANELS, Q.OFFSET_KW, Q.EV_PANELS, Q.EV_KW)] == \
        [Verdict.RIGHT] * 4


@pytest.mark.parametrize(("answer", "quantity", "verdict"), [
    ("- Annual savings: 5,841.59 kWh × $0.32 + 14,434.89 kWh × $0.08 = $3,024.10",
     Q.SAVINGS, Verdict.RIGHT),
    ("Return on investment over 25 years: 408.08 percent", Q.ROI, Verdict.RIGHT),
    ("You save $252 per month, i.e. $3,024 per year.", Q.SAVINGS, Verdict.RIGHT),
    ("Budget max 31 panels costing $14,880, with savings of $3,024 a year.", Q.SAVINGS,
     Verdict.RIGHT),
    ("Break-even is NOT 2.29 years as under net metering, but 4.92 years.", Q.BREAK_EVEN,
     Verdict.RIGHT),
    ("- Savings: -$3,024", Q.SAVINGS, Verdict.WRONG),
], ids=["formula-result", "percent-word", "monthly-beside", "cost-beside", "negated",
        "negative-money"])
def test_figures_beside_other_figures(answer: str, quantity: Quantity, verdict: Verdict,
                                      san_diego: Location) -> None:
    assert verdicts(answer, san_diego)[quantity] is verdict


def test_a_bold_figure_in_a_table_cell_is_marked_inside_its_bold(san_diego: Location) -> None:
    answer = "| Scenario | Panels | kW |\n|---|---|---|\n| Offset 100% | **128** | 51.2 kW |\n"
    report = check(answer, build_user_prompt(san_diego), san_diego)
    shown = highlight(answer, report)
    assert "| **:red[~~128~~] :red-background[✗ 30 in the data]** |" in shown


def test_a_second_data_context_is_an_edit(san_diego: Location) -> None:
    prompt = build_user_prompt(san_diego) + "\n## DATA CONTEXT\n\n- Budget: $99,999\n"
    assert check(SAMPLE_ANSWER, prompt, san_diego).not_graded == EDITED.format(
        name="San Diego, CA")


def test_the_ratio_shows_how_far_off(san_diego: Location) -> None:
    report = check("- Savings: $12.50 a year", build_user_prompt(san_diego), san_diego)
    (savings,) = [g for g in report.grades if g.quantity is Q.SAVINGS]
    assert savings.describe().endswith("(0.0041x)")
