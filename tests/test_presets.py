"""Unit tests for the PV preset library (studio/pv/ and the presets/ data files)."""

from dataclasses import replace
from pathlib import Path

import pytest

from studio.pv.library import (
    PRESET_DIR,
    PresetError,
    load_knowledge_base,
    load_locations,
    load_system_prompts,
)
from studio.pv.location import COLUMNS, Location
from studio.pv.locations_csv import MAX_ROWS, LocationRow, parse_locations_csv
from studio.pv.prompt import (
    CUSTOM,
    LAYOUTS,
    SEED_ORDER,
    STATIC_FIRST,
    build_user_prompt,
    preset_of,
    shared_prefix,
)
from studio.pv.sizing import derive_figures
from studio.records.uploads import UploadError, read_upload

HEADER = ",".join(COLUMNS)
SAMPLE_NOTE = "Sample household data for demonstration — not measured"


def _row(name: str, /, **overrides: str) -> str:
    """A valid CSV data row (Boston-like figures) with some cells replaced."""
    cells = {
        "name": name, "region": "Test", "sample": "true", "avg_daily_kwh": "28.40",
        "winter_summer_ratio": "1.18", "peak_weekly_max_kw": "6.10",
        "nighttime_load_ratio_pct": "52.30", "sunlight_cv": "0.3820", "peak_sun_hours": "4.2",
        "electricity_rate_usd_kwh": "0.30", "budget_usd": "20000", "panel_watts": "400",
        "cost_per_panel_usd": "1150", "has_ev": "false", "export_credit_usd_kwh": "",
    }
    cells.update(overrides)
    return ",".join(cells[c] for c in COLUMNS)


def _csv(*rows: str, header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


@pytest.fixture(scope="module")
def locations() -> list[Location]:
    return load_locations()


def _by_name(locations: list[Location], name: str) -> Location:
    return next(loc for loc in locations if loc.name == name)


# --- shipped data -----------------------------------------------------------------------------

def test_thirty_locations_load(locations: list[Location]) -> None:
    assert len(locations) == 30
    assert len({loc.name for loc in locations}) == 30
    assert locations[0].name == "San Diego, CA"
    assert not locations[0].is_sample
    assert all(loc.is_sample for loc in locations[1:])


def test_csv_header_is_exact() -> None:
    first_line = (PRESET_DIR / "locations.csv").read_text(encoding="utf-8").splitlines()[0]
    assert first_line == (
        "name,region,sample,avg_daily_kwh,winter_summer_ratio,peak_weekly_max_kw,"
        "nighttime_load_ratio_pct,sunlight_cv,peak_sun_hours,electricity_rate_usd_kwh,"
        "budget_usd,panel_watts,cost_per_panel_usd,has_ev,export_credit_usd_kwh"
    )


def test_san_diego_has_the_seed_figures(locations: list[Location]) -> None:
    sd = locations[0]
    assert sd.avg_daily_kwh == 53.76
    assert sd.winter_summer_ratio == 0.94
    assert sd.peak_weekly_max_kw == 7.79
    assert sd.nighttime_load_ratio_pct == 70.23
    assert sd.sunlight_cv == 0.3141
    assert sd.budget_usd == 15000
    assert isinstance(sd.budget_usd, int) and isinstance(sd.panel_watts, int)
    assert sd.has_ev is True


def test_san_diego_prompt_quotes_the_seed_figures(locations: list[Location]) -> None:
    prompt = build_user_prompt(locations[0])
    for text in ("53.76 kWh", "0.94", "7.79 kW", "70.23%", "0.3141", "$15,000"):
        assert text in prompt, text
    assert SAMPLE_NOTE not in prompt


@pytest.mark.parametrize(("layout", "order"), [
    (SEED_ORDER, ("DATA CONTEXT", "KNOWLEDGE BASE", "QUESTION")),
    (STATIC_FIRST, ("KNOWLEDGE BASE", "INSTRUCTIONS", "DATA CONTEXT", "QUESTION")),
])
def test_every_prompt_has_sections_in_order_and_about_8000_chars(
    locations: list[Location], layout: str, order: tuple[str, ...],
) -> None:
    for loc in locations:
        prompt = build_user_prompt(loc, layout=layout)
        positions = [prompt.find(f"## {s}\n") for s in order]
        assert positions[0] == 0, loc.name
        assert positions == sorted(positions) and -1 not in positions, loc.name
        assert 7000 <= len(prompt) <= 9000, (loc.name, len(prompt))
        # The question is filled with this location and no placeholder is left behind.
        assert loc.name in prompt[positions[-1]:], loc.name
        assert "{location}" not in prompt


def test_static_first_prompts_share_a_common_prefix(locations: list[Location]) -> None:
    """Every preset prompt starts with the same >= 40% of its text (a prefix cache holds it
    once per batch); in the seed's order they part after the first line."""
    prompts = [build_user_prompt(loc) for loc in locations]
    common = shared_prefix(prompts)
    assert min(len(common) / len(prompt) for prompt in prompts) >= 0.40
    assert common.endswith("## DATA CONTEXT\n\nLocation: ")
    seed = shared_prefix([build_user_prompt(loc, layout=SEED_ORDER) for loc in locations])
    assert len(seed) < 40


def test_both_layouts_hold_the_same_sections(locations: list[Location]) -> None:
    for loc in locations[:5]:
        static, seed = (build_user_prompt(loc, layout=layout) for layout in LAYOUTS)
        assert abs(len(static) - len(seed)) < 100
        for line in seed.splitlines():  # every line of the seed's prompt is in the new one
            assert line.replace("## QUESTION", "") in static or line.startswith("Using only")
        assert preset_of(static, loc) == preset_of(seed, loc) == loc.name


def test_sample_rows_are_marked_in_the_prompt(locations: list[Location]) -> None:
    for loc in locations[1:]:
        data_context = build_user_prompt(loc).split("## DATA CONTEXT")[1]
        assert SAMPLE_NOTE in data_context.split("## QUESTION")[0], loc.name


def test_prompt_is_deterministic(locations: list[Location]) -> None:
    assert build_user_prompt(locations[3]) == build_user_prompt(locations[3])


def test_knowledge_base_size_and_topics() -> None:
    kb = load_knowledge_base()
    assert 3500 <= len(kb) <= 4700, len(kb)
    for topic in ("400 W", "performance ratio", "Peak sun hours", "net metering", "0.5%",
                  "battery", "EV", "payback", "25-year ROI", "inverter"):
        assert topic.lower() in kb.lower(), topic


def test_system_prompts() -> None:
    prompts = load_system_prompts()
    names = list(prompts)
    assert names[0] == "PV grid analyst"
    assert len(names) == 3
    default = prompts["PV grid analyst"]
    assert default.startswith("You are an expert power grid data analyst")
    sections = ["RECOMMENDATION FOR PV PANEL INSTALLATION", "KEY TRENDS AND SEASONAL PATTERNS",
                "PV PANEL SIZING", "PAYBACK PERIOD AND ROI", "RISKS AND CAVEATS"]
    found = [default.find(s) for s in sections]
    assert -1 not in found and found == sorted(found)
    assert "DATA CONTEXT" in default
    assert all(text.strip() for text in prompts.values())


def test_question_template_uses_location_placeholder() -> None:
    assert "{location}" in (PRESET_DIR / "question.md").read_text(encoding="utf-8")


# --- derived figures, checked by hand -----------------------------------------------------------

def test_boston_figures_by_hand(locations: list[Location]) -> None:
    # Boston: 28.40 kWh/day, ratio 1.18, 4.2 PSH, 400 W, $0.30/kWh, $20,000, $1,150/panel, no EV,
    # full net metering (every kWh the household would buy is credited at the retail rate).
    # annual = 28.40 x 365 = 10,366 kWh; per panel = 4.2 x 365 x 0.4 x 0.8 = 490.56 kWh
    # offset = 10,366 / 490.56 = 21.13 -> 22 panels = 8.80 kW; budget = 20,000 / 1,150 = 17.39 -> 17
    # savings = 17 x 490.56 x 0.30 = 2,501.856; cost = 17 x 1,150 = 19,550
    # break-even = 19,550 / 2,501.856 = 7.814; ROI = (25 x 2,501.856 - 19,550) / 19,550 = 219.93%
    # seasons: summer daily S = 10,366 / (90 x 1.18 + 92 + 183 x 1.09) = 10,366 / 397.67 = 26.0668
    fig = derive_figures(_by_name(locations, "Boston, MA"))
    assert fig.annual_kwh == pytest.approx(10366.0)
    assert fig.annual_kwh_per_panel == pytest.approx(490.56)
    assert fig.offset_panels == 22
    assert fig.offset_system_kw == pytest.approx(8.8)
    assert fig.ev_panels is None
    assert fig.budget_max_panels == 17
    assert fig.installed_panels == 17
    assert fig.installed_cost_usd == pytest.approx(19550.0)
    assert fig.annual_savings_usd == pytest.approx(2501.856)
    assert fig.break_even_years == pytest.approx(7.8142, abs=1e-4)
    assert fig.roi_25y_pct == pytest.approx(219.9304, abs=1e-4)
    assert fig.seasonal_daily_kwh["Summer"] == pytest.approx(26.0668, abs=1e-4)
    assert fig.seasonal_daily_kwh["Winter"] == pytest.approx(30.7589, abs=1e-4)
    assert fig.seasonal_daily_kwh["Spring"] == pytest.approx(28.4129, abs=1e-4)
    assert fig.monthly_kwh[0] == pytest.approx(953.525, abs=1e-3)  # January: 31 x winter daily
    assert sum(fig.monthly_kwh) == pytest.approx(10366.0)

    prompt = build_user_prompt(_by_name(locations, "Boston, MA"))
    for text in ("10,366.00 kWh", "490.56 kWh", "22 panels (8.80 kW system)",
                 "17 panels ($20,000 budget / $1,150 per panel)", "$19,550", "$2,501.86",
                 "7.81 years", "219.93%", "| January | 31 | 30.76 | 953.52 |",
                 "Typical winter week: 215.31 kWh", "not applicable (no EV"):
        assert text in prompt, text


def test_net_billing_savings_are_capped_at_consumption_madrid(
        locations: list[Location]) -> None:
    # Madrid: 9.60 kWh/day -> 3,504 kWh/yr; per panel 5.2 x 365 x 0.45 x 0.8 = 683.28 kWh
    # offset = 5.13 -> 6 panels; budget allows 8,000 / 700 = 11, but only 6 are needed.
    # 6 panels make 4,099.68 kWh; the daytime load, 3,504 x (1 - 0.456) = 1,906.176 kWh, is
    # self-consumed at $0.22; 2,193.504 kWh are exported, but credits stop at what the house
    # would buy: 3,504 - 1,906.176 = 1,597.824 kWh at the $0.06 export credit.
    # savings = 419.35872 + 95.86944 = 515.22816; cost = 4,200; break-even = 8.1517 years;
    # ROI = (25 x 515.22816 - 4,200) / 4,200 = 206.6834%
    fig = derive_figures(_by_name(locations, "Madrid, ES"))
    assert (fig.offset_panels, fig.budget_max_panels, fig.installed_panels) == (6, 11, 6)
    assert fig.self_consumed_kwh == pytest.approx(1906.176)
    assert fig.exported_kwh == pytest.approx(2193.504)
    assert fig.credited_export_kwh == pytest.approx(1597.824)
    assert fig.annual_savings_usd == pytest.approx(515.22816)
    assert fig.break_even_years == pytest.approx(8.1517, abs=1e-4)
    assert fig.roi_25y_pct == pytest.approx(206.6834, abs=1e-4)


def test_san_diego_under_net_billing(locations: list[Location]) -> None:
    # California's net billing tariff: exports earn $0.08/kWh against $0.32 retail.
    # 31 panels x 654.08 = 20,276.48 kWh; daytime load 19,622.40 x (1 - 0.7023) = 5,841.58848
    # kWh self-consumed (28.81% of output), 14,434.89152 kWh exported, all credited (the
    # household with its EV would buy 22,622.40 kWh). savings = 1,869.30831 + 1,154.79132 =
    # 3,024.09963; cost 31 x 480 = 14,880: break-even 4.9205 years, ROI 408.08% (not the
    # 2.29 years and 990% that full retail credit gave).
    fig = derive_figures(locations[0])
    assert locations[0].export_credit_usd_kwh == 0.08
    assert fig.annual_savings_usd == pytest.approx(3024.09963, abs=1e-4)
    assert fig.break_even_years == pytest.approx(4.9205, abs=1e-4)
    assert fig.roi_25y_pct == pytest.approx(408.0813, abs=1e-4)
    prompt = build_user_prompt(locations[0])
    for text in ("Export credit: $0.08/kWh (net billing", "Annual PV output: 20,276.48 kWh",
                 "self-consumed): 5,841.59 kWh (28.81% of output)", "EV charging happens at night",
                 "Expected annual savings: $3,024.10", "Break-even: 4.92 years",
                 "ROI (25 yr): 408.08%", "$480 ($1.20/W)"):
        assert text in prompt, text


def test_full_net_metering_credits_exports_at_retail(locations: list[Location]) -> None:
    """No export credit (an empty cell, or a file without the column) is full net metering:
    the savings are every kWh the household would buy, at the retail rate, as before."""
    san_diego = replace(locations[0], export_credit_usd_kwh=None)
    fig = derive_figures(san_diego)
    assert fig.annual_savings_usd == pytest.approx(20276.48 * 0.32)
    assert fig.break_even_years == pytest.approx(2.2933, abs=1e-4)
    assert "Export credit: $0.32/kWh (full net metering" in build_user_prompt(san_diego)
    parsed = parse_locations_csv(_csv(_row("Blank", export_credit_usd_kwh="")))
    assert parsed.locations[0].export_credit_usd_kwh is None
    without = _csv(",".join(_row("Old").split(",")[:-1]),
                   header=HEADER.removesuffix(",export_credit_usd_kwh"))
    parsed = parse_locations_csv(without)
    assert parsed.file_problem is None and parsed.row_problems == []
    assert parsed.locations[0].export_credit_usd_kwh is None
    bad = parse_locations_csv(_csv(_row("Bad", export_credit_usd_kwh="-0.05")))
    assert [str(p) for p in bad.row_problems] == [
        "row 2: column 'export_credit_usd_kwh': -0.05 must be at least 0"]


def test_san_diego_exact_fit_and_ev(locations: list[Location]) -> None:
    # 19,622.40 / 654.08 is exactly 30 panels: float noise must not turn it into 31.
    # With EV: 22,622.40 / 654.08 = 34.59 -> 35 panels; budget 15,000 / 480 = 31.25 -> 31.
    fig = derive_figures(locations[0])
    assert fig.offset_panels == 30
    assert fig.ev_panels == 35
    assert fig.budget_max_panels == 31
    assert fig.installed_panels == 31
    prompt = build_user_prompt(locations[0])
    assert "22,622.40 kWh total): 35 panels (14.00 kW system)" in prompt
    assert "Budget-constrained maximum: 31 panels" in prompt


def test_exact_fit_with_float_noise_is_not_rounded_up(locations: list[Location]) -> None:
    # 17.92 x 365 = 6,540.8 kWh = exactly 10 x 654.08, but in floats it is 10.000000000000002.
    loc = replace(locations[0], avg_daily_kwh=17.92, has_ev=False)
    assert derive_figures(loc).offset_panels == 10


def test_custom_knowledge_base_and_question(locations: list[Location]) -> None:
    prompt = build_user_prompt(locations[1], knowledge_base="KB TEXT",
                               question="Size PV for {location} {json: 1}", layout=SEED_ORDER)
    assert "## KNOWLEDGE BASE\n\nKB TEXT\n\n## QUESTION" in prompt
    assert prompt.endswith("Size PV for Phoenix, AZ {json: 1}\n")
    static = build_user_prompt(locations[1], knowledge_base="KB TEXT",
                               question="Be brief.\n\nSize PV for {location} {json: 1}")
    assert static.startswith("## KNOWLEDGE BASE\n\nKB TEXT\n\n## INSTRUCTIONS\n\nBe brief.")
    assert static.endswith("Size PV for Phoenix, AZ {json: 1}\n\nFollow the INSTRUCTIONS "
                           "above.\n")


# --- CSV validation -----------------------------------------------------------------------------

def test_valid_csv_parses_with_types() -> None:
    parsed = parse_locations_csv(_csv(_row("A"), _row("B", has_ev="Yes")))
    assert parsed.file_problem is None and parsed.row_problems == [] and parsed.notes == []
    locs = parsed.locations
    assert [loc.name for loc in locs] == ["A", "B"]
    assert locs[0].has_ev is False and locs[1].has_ev is True
    assert locs[0].avg_daily_kwh == 28.4 and locs[0].panel_watts == 400


def test_missing_column_is_one_message_about_the_file() -> None:
    header = HEADER.replace(",sunlight_cv", "")
    row = _row("A").split(",")
    del row[COLUMNS.index("sunlight_cv")]
    parsed = parse_locations_csv(_csv(",".join(row), header=header))
    assert parsed.locations == [] and parsed.row_problems == []
    assert parsed.file_problem is not None
    assert "lacks 1 of the" in parsed.file_problem and "sunlight_cv" in parsed.file_problem
    assert "row" not in parsed.file_problem


def test_semicolon_separated_file_is_read_and_said() -> None:
    text = _csv(_row("A"), _row("B")).replace(",", ";")
    parsed = parse_locations_csv(text)
    assert parsed.file_problem is None and parsed.row_problems == []
    assert [loc.name for loc in parsed.locations] == ["A", "B"]
    assert parsed.delimiter == ";"
    assert parsed.notes == ["Read as semicolon-separated values."]


EXCEL_DE = Path(__file__).parent / "fixtures" / "locations-excel-de.csv"


def test_a_european_excel_file_reads_its_decimal_commas() -> None:
    """German Excel's CSV: BOM, semicolons, CRLF, decimal commas, thousands dots ('12.000',
    '1.150,00'), a name with a comma and one with a quoted semicolon."""
    data = EXCEL_DE.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b";53,76;" in data and b"\r\n" in data
    parsed = parse_locations_csv(read_upload(EXCEL_DE.name, data, 1_000_000))
    assert parsed.file_problem is None and parsed.row_problems == []
    san_diego, munich, paris = parsed.locations
    # The same figures as the shipped file's; without the column, full net metering.
    assert san_diego == replace(load_locations()[0], export_credit_usd_kwh=None)
    assert (munich.name, munich.avg_daily_kwh, munich.budget_usd) == ("München, DE", 12.5, 12000)
    assert munich.cost_per_panel_usd == 1150.0 and munich.sunlight_cv == 0.45
    assert (paris.name, paris.avg_daily_kwh, paris.cost_per_panel_usd) == (
        "Île-de-France; Paris", 9.0, 950.5)
    # Said once, with the rule; no cell is called "not a number".
    assert parsed.notes == ["Read as semicolon-separated values with decimal commas "
                            "('53,76' is 53.76; '1.234,5' is 1234.5)."]
    assert parsed.decimal_comma


def _de_csv(*rows: str) -> str:
    return "\n".join([HEADER.replace(",", ";"), *rows]) + "\n"


def _de_row(name: str, /, **overrides: str) -> str:
    """A row as a comma-decimal spreadsheet saves it: semicolons, '28,40'."""
    cells = dict(zip(COLUMNS, _row(name).split(","), strict=True))
    cells = {column: cell.replace(".", ",") for column, cell in cells.items()}
    return ";".join({**cells, **overrides}[column] for column in COLUMNS)


@pytest.mark.parametrize(("cell", "value"), [
    ("53,76", 53.76), ("1.234,5", 1234.5), ("1 234,5", 1234.5), ("1\u00a0234,5", 1234.5),
    ("12.345.678", 12345678.0), ("7", 7.0), ("+0,5", 0.5), ("1,234", 1.234),
])
def test_decimal_comma_numbers(cell: str, value: float) -> None:
    parsed = parse_locations_csv(_de_csv(_de_row("A", avg_daily_kwh=cell)))
    assert parsed.row_problems == [] and parsed.decimal_comma
    assert parsed.locations[0].avg_daily_kwh == value
    assert parsed.locations[0].winter_summer_ratio == 1.18  # the row's other numbers too


@pytest.mark.parametrize("cell", ["0.25", "1.23,5", "1.2345", "12.34.567"])
def test_a_decimal_point_in_a_decimal_comma_file_is_one_clear_problem(cell: str) -> None:
    """Neither a decimal comma nor a thousands dot: refused, not guessed."""
    parsed = parse_locations_csv(_de_csv(_de_row("A", sunlight_cv=cell), _de_row("B")))
    assert parsed.decimal_comma and [loc.name for loc in parsed.locations] == ["B"]
    (problem,) = parsed.row_problems
    assert problem.message == f"column 'sunlight_cv': '{cell}' has a decimal point"
    assert parsed.decimal_points == [(2, "sunlight_cv")]
    assert parsed.notes[-1] == ("This file writes decimals with a comma (like '53,76'), but "
                                "these cells have a decimal point: write them with a comma. "
                                "Row 2: sunlight_cv.")


def test_many_decimal_points_are_explained_once_with_their_cells() -> None:
    """A semicolon file with a few dot decimals: why is said once, with every cell's row and
    column; each skipped row names its cells without repeating why."""
    points = {"sunlight_cv": "0.25", "peak_sun_hours": "5.1", "winter_summer_ratio": "1.18"}
    parsed = parse_locations_csv(_de_csv(_de_row("A"), _de_row("B", **points),
                                         _de_row("C", sunlight_cv="0.3")))
    assert [loc.name for loc in parsed.locations] == ["A"]
    text = " ".join([*parsed.notes, *(str(problem) for problem in parsed.row_problems)])
    assert text.count("writes decimals with a comma") == 1
    order = [c for c in COLUMNS if c in points]
    assert parsed.notes[-1].endswith(f"Row 3: {', '.join(order)}; Row 4: sunlight_cv.")
    assert [problem.row for problem in parsed.row_problems] == [3, 4]


def test_a_semicolon_file_without_decimal_commas_keeps_the_point() -> None:
    parsed = parse_locations_csv(_csv(_row("A"), _row("B", budget_usd="12000")).replace(",", ";"))
    assert not parsed.decimal_comma and parsed.row_problems == []
    assert parsed.locations[0].avg_daily_kwh == 28.4


def test_decimal_commas_only_where_the_separator_is_a_semicolon() -> None:
    """A comma-separated file keeps the decimal point: a quoted '53,76' is not a number."""
    parsed = parse_locations_csv(_csv(_row("A", avg_daily_kwh='"53,76"')))
    assert not parsed.decimal_comma
    (problem,) = parsed.row_problems
    assert "'53,76' is not a number" in problem.message
    tabbed = parse_locations_csv(_csv(_row("A")).replace(",", "\t"))  # points, tabs
    assert not tabbed.decimal_comma and tabbed.locations[0].avg_daily_kwh == 28.4


def test_an_upload_that_is_not_text_names_the_file() -> None:
    for data in (b"\x89PNG\r\n\x1a\n\x00\x00", "name;x\n".encode("utf-16"),
                 "Zürich".encode("latin-1")):
        with pytest.raises(UploadError) as raised:
            read_upload("photo.png", data, 1_000)
        assert str(raised.value).startswith("photo.png is not UTF-8 text: save it as UTF-8")
        assert "codec" not in str(raised.value)
    with pytest.raises(UploadError, match=r"^big.csv is 1,001 bytes; the limit is 1,000\.$"):
        read_upload("big.csv", b"x" * 1_001, 1_000)
    assert read_upload("ok.csv", "\ufeffname\n".encode(), 1_000) == "name\n"


def test_row_with_missing_values_is_skipped_and_good_rows_load() -> None:
    # drops cost_per_panel_usd, has_ev and the optional export credit
    short = ",".join(_row("Short").split(",")[:-3])
    parsed = parse_locations_csv(_csv(_row("A"), short, _row("B")))
    assert [loc.name for loc in parsed.locations] == ["A", "B"]
    (problem,) = parsed.row_problems
    assert problem.row == 3
    assert "cost_per_panel_usd" in problem.message and "has_ev" in problem.message


def test_non_numeric_value_names_column_and_value() -> None:
    parsed = parse_locations_csv(_csv(_row("A"), _row("Bad", avg_daily_kwh="lots"), _row("C")))
    assert [loc.name for loc in parsed.locations] == ["A", "C"]
    (problem,) = parsed.row_problems
    assert problem.row == 3
    assert "avg_daily_kwh" in problem.message and "'lots'" in problem.message
    assert str(problem).startswith("row 3: ")


@pytest.mark.parametrize("text", ["", "   \n\n", "\ufeff"])
def test_empty_text(text: str) -> None:
    parsed = parse_locations_csv(text)
    assert parsed.locations == [] and parsed.row_problems == []
    assert parsed.file_problem is not None and "empty" in parsed.file_problem


def test_header_only() -> None:
    parsed = parse_locations_csv(_csv())
    assert parsed.locations == [] and parsed.row_problems == []
    assert parsed.file_problem == "The file has a header but no data rows."


def test_bad_boolean() -> None:
    parsed = parse_locations_csv(_csv(_row("A", has_ev="maybe"), _row("B")))
    assert [loc.name for loc in parsed.locations] == ["B"]
    (problem,) = parsed.row_problems
    assert "has_ev" in problem.message and "'maybe'" in problem.message


def test_too_many_rows_counts_every_row_left_out() -> None:
    rows = [_row(f"Town {i}") for i in range(10_000)]
    parsed = parse_locations_csv(_csv(*rows))
    assert MAX_ROWS == 500
    assert len(parsed.locations) == 500 and parsed.locations[-1].name == "Town 499"
    assert parsed.row_problems == [] and parsed.file_problem is None
    assert parsed.dropped_rows == 9_500
    assert parsed.notes == ["Too many rows: the first 500 locations are loaded, 9,500 more "
                            "were left out."]


def test_one_row_left_out_is_said_in_the_singular() -> None:
    parsed = parse_locations_csv(_csv(*[_row(f"Town {i}") for i in range(MAX_ROWS + 1)]))
    assert parsed.notes == [f"Too many rows: the first {MAX_ROWS} locations are loaded, 1 more "
                            "was left out."]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"peak_sun_hours": "0"}, "peak_sun_hours"),
        ({"cost_per_panel_usd": "-5"}, "cost_per_panel_usd"),
        ({"budget_usd": "1500.5"}, "whole number"),
        ({"nighttime_load_ratio_pct": "120"}, "at most 100"),
        ({"sunlight_cv": "nan"}, "finite"),
        ({"name": "  "}, "'name' is empty"),
    ],
)
def test_out_of_range_values(overrides: dict[str, str], expected: str) -> None:
    parsed = parse_locations_csv(_csv(_row("Bad", **overrides), _row("Good")))
    assert [loc.name for loc in parsed.locations] == ["Good"]
    (problem,) = parsed.row_problems
    assert expected in problem.message


def test_every_bad_cell_of_a_row_is_reported_in_column_order() -> None:
    parsed = parse_locations_csv(_csv(_row("A", budget_usd="1500.5", sample="maybe",
                                           nighttime_load_ratio_pct=" 120 ")))
    (problem,) = parsed.row_problems
    assert str(problem) == (
        "row 2: column 'sample': 'maybe' is not a boolean (use true or false); "
        "column 'nighttime_load_ratio_pct': 120 must be at most 100; "
        "column 'budget_usd': '1500.5' is not a whole number")


def test_row_model_has_the_location_columns_and_keeps_the_csv_rules() -> None:
    assert tuple(LocationRow.model_fields) == COLUMNS
    cells = _row(" A ", has_ev=" Y ", budget_usd="20000.0").split(",")
    row = LocationRow.model_validate(dict(zip(COLUMNS, cells, strict=True)))
    assert (row.name, row.has_ev, row.budget_usd) == ("A", True, 20000)
    assert isinstance(row.budget_usd, int)
    # pydantic alone would read "on" as true; the CSV takes true/yes/y/1 and false/no/n/0 only.
    parsed = parse_locations_csv(_csv(_row("B", has_ev="on")))
    assert [str(problem) for problem in parsed.row_problems] == [
        "row 2: column 'has_ev': 'on' is not a boolean (use true or false)"]


def test_duplicate_names_bom_blank_lines_and_extra_columns() -> None:
    text = "\ufeff" + _csv(_row("A") + ",x", "", _row("A") + ",y", header=HEADER + ",notes")
    parsed = parse_locations_csv(text)
    assert [loc.name for loc in parsed.locations] == ["A"]
    (problem,) = parsed.row_problems
    assert "duplicate" in problem.message and problem.row == 4


def test_preset_of_follows_the_prompt(locations: list[Location]) -> None:
    san_diego, phoenix = locations[0], locations[1]
    prompt = build_user_prompt(san_diego)
    assert preset_of(prompt, san_diego) == san_diego.name
    assert preset_of(prompt + " Also a battery?", san_diego) == CUSTOM
    # A prompt opened from a CSV row keeps that row's name while it is unchanged, whatever
    # location the picker shows.
    loc_499 = build_user_prompt(phoenix).replace(phoenix.name, "Loc 499")
    assert preset_of(loc_499, san_diego, origin=("Loc 499", loc_499)) == "Loc 499"
    assert preset_of(loc_499 + "!", san_diego, origin=("Loc 499", loc_499)) == CUSTOM


def test_load_locations_raises_preset_error_for_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "locations.csv"
    bad.write_text(_csv(_row("A", panel_watts="lots")), encoding="utf-8")
    with pytest.raises(PresetError, match="panel_watts"):
        load_locations(bad)
    with pytest.raises(PresetError):
        load_locations(tmp_path / "missing.csv")


def test_load_system_prompts_rejects_bad_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "prompts.yaml"
    bad.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(PresetError):
        load_system_prompts(bad)
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(PresetError):
        load_system_prompts(bad)


def test_pv_modules_have_no_streamlit_dependency() -> None:
    for path in (Path(__file__).resolve().parent.parent / "studio" / "pv").glob("*.py"):
        assert "streamlit" not in path.read_text(encoding="utf-8"), path
    assert PRESET_DIR.name == "presets" and PRESET_DIR.is_dir()
