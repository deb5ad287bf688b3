"""Text the app does not write itself: a user's or a server's strings shown as literal text
(``literal``), the Markdown download sanitized (``markdown_file``), and a host's credentials
scrubbed from every message (``scrub``) and from every page (AppTest).
tests/browser/test_untrusted_text.py checks the same in Chromium."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from backends.http import scrub
from studio.records.render import literal, markdown_file, markdown_with_thinking, safe_markdown
from tests.conftest import element_texts, open_app, use_config
from tests.servers.ollama import FakeOllama, Script

BEACON = "http://127.0.0.1:9/beacon.png"

# A renderer as the browser's: CommonMark with HTML, tables and strikethrough (GFM's bare-URL
# autolinks are checked apart: markdown-it needs linkify-it for them).
_full = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])

CONSTRUCTS = [
    f"![m]({BEACON})",  # an image: the browser would fetch it
    f"![m][r]\n\n[r]: {BEACON}",
    f"[link]({BEACON})",
    f"<{BEACON}>",
    "<ops@example.com>",
    "http://example.com/x and www.example.com",
    "*em* _em_ **strong** __strong__ ~~gone~~",
    "# heading",
    "Heading\n===",
    "Heading\n---",
    "1. one\n2) two\n- three\n+ four\n* five",
    "> quote",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "`code` and ``more``",
    "```\nfenced\n```",
    "<script>alert(1)</script>",
    f"<img src='{BEACON}' onerror=alert(1)>",
    "<!-- comment -->",
    "a < b > c & d",
    "&lt;b&gt; &amp; &#x41; &copy;",
    r"C:\path\to\file \*not em\* trailing\\",
    "$x^2$ and $$y$$",
    ":red[alert] :material/home:",
    "[^1] footnote",
    "a_b_c 2*3*4 snake_case_name",
    "llama3.1:8b",
    "Pull it first: `ollama pull llama3.1:8b`",
]


def rendered(text: str) -> str:
    return _full.render(text)


@pytest.mark.parametrize("text", CONSTRUCTS)
def test_literal_text_renders_as_itself_in_plain_paragraphs(text: str) -> None:
    shown = rendered(literal(text))
    assert shown == "".join(f"<p>{html.escape(paragraph, quote=False)}</p>\n"
                            for paragraph in text.split("\n\n"))


@pytest.mark.parametrize("text", CONSTRUCTS)
def test_literal_text_has_no_link_image_or_html(text: str) -> None:
    tokens = [token for block in _full.parse(literal(text)) for token in
              [block, *(block.children or ())]]
    assert {token.type for token in tokens} <= {"paragraph_open", "paragraph_close", "inline",
                                                "text", "softbreak"}


def test_literal_keeps_plain_words_and_numbers_as_they_are() -> None:
    assert literal("Reachable 2 models v0 12 4") == "Reachable 2 models v0 12 4"
    assert literal("") == ""
    assert literal("3.14") == r"3\.14"  # escaped, shown as 3.14


# -- the Markdown download --------------------------------------------------------------------
HOSTILE = (
    "## Report\n\n<script>window.__pwned = 1</script>\n\n"
    f"<img src=\"{BEACON}\" onerror=\"window.__pwned = 2\">\n\n"
    "Inline <b onmouseover=alert(1)>bold</b> and <a href='javascript:alert(1)'>x</a>.\n\n"
    "[Click](javascript:alert(3)) and [fine](https://example.com)\n\n"
    f"![chart]({BEACON}?q=SECRET)\n\n[r]: {BEACON}\n\n"
    "```html\n<script>kept as code</script>\n```\n\n"
    "Budget: $15,000.\n"
)


def active(markdown: str) -> list[str]:
    """What a Markdown viewer (CommonMark with HTML) would make active: images, raw HTML,
    links other than http(s)."""
    found = []
    for block in _full.parse(markdown):
        if block.type == "html_block":
            found.append(block.content)
        for token in block.children or ():
            if token.type in ("image", "html_inline"):
                found.append(token.content)
            if token.type == "link_open" and not str(token.attrGet("href")).startswith(
                    ("http://", "https://", "mailto:")):
                found.append(str(token.attrGet("href")))
    return found


def test_the_markdown_download_has_no_script_image_or_html() -> None:
    md = markdown_file(HOSTILE)
    assert active(md) == []
    page = rendered(md)
    assert "<script" not in page and "<img" not in page and "onmouseover=" not in page.replace(
        "onmouseover=alert", "")  # as text only
    assert "&lt;script&gt;window.__pwned" in page  # still readable, as text
    assert '<a href="https://example.com">fine</a>' in page
    assert "&lt;script&gt;kept as code" in page  # code stays code
    assert "$15,000" in md  # no dollar escapes in a file


def test_the_markdown_download_with_thinking_is_sanitized_too() -> None:
    md = markdown_with_thinking(HOSTILE, thinking=f"Think: ![t]({BEACON}) <script>x</script>")
    assert active(md) == ["<details>\n<summary>Thinking</summary>\n",
                          "</details>\n"]  # only the fold the app writes itself
    assert "Think" in md and "Report" in md


def test_a_plain_report_downloads_unchanged() -> None:
    report = "## PV\n\n* 31 panels ($15,000 budget)\n* ROI 132.15%\n\n| a | b |\n|---|---|\n"
    assert markdown_file(report) == report
    assert markdown_with_thinking(report) == report


@pytest.mark.parametrize(("text", "expected"), [
    (r"\<b>", r"\<b>"),  # already escaped
    (r"\\<b>", r"\\\<b>"),  # an escaped backslash, then a bare <
    ("`<b>` <b>", r"`<b>` \<b>"),
])
def test_only_bare_angle_brackets_outside_code_are_escaped(text: str, expected: str) -> None:
    assert markdown_file(text) == expected


def test_the_page_and_the_file_agree_on_links() -> None:
    page, file = safe_markdown(HOSTILE), markdown_file(HOSTILE)
    assert "(link removed)" in page and "(link removed)" in file


# -- credentials ------------------------------------------------------------------------------
URL = "http://demo:s3cretHostPW@127.0.0.1:11741"


@pytest.mark.parametrize("message", [
    f"Invalid URL '{URL}/api/tags': No host supplied",
    f"No connection adapters were found for '{URL}/api/chat'",
    "Failed to parse: demo:s3cretHostPW@127.0.0.1:11741",
    "Failed to parse: http://demo:s3cret%48ostPW@127.0.0.1:11741".replace("%48", "H"),
    "auth=('demo', 's3cretHostPW')",
    "http://demo:s3cret%48ostPW@127.0.0.1:11741/x",
])
def test_scrub_takes_the_credentials_out_of_any_message(message: str) -> None:
    cleaned = scrub(message, URL.replace("H", "%48", 1) if "%48" in message else URL)
    assert "s3cret" not in cleaned
    assert "127.0.0.1" in cleaned or "auth=" in cleaned
    if "://" in message:
        assert "demo" not in cleaned  # a URL in the text loses its whole user info


def test_scrub_leaves_a_message_without_credentials_alone() -> None:
    text = "HTTPConnectionPool(host='127.0.0.1', port=11741): Read timed out."
    assert scrub(text, "http://127.0.0.1:11741") == text
    assert scrub("a pw b", "http://u:pw@h:1") == "a pw b"  # too short to replace safely


def test_no_element_of_any_page_holds_a_host_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed_port: int) -> None:
    with FakeOllama(script=Script(tokens=["Install", " 12", " panels."])) as ollama:
        good = ollama.url.replace("http://", "http://demo:s3cretHostPW@")
        down = f"http://demo:s3cretHostPW@127.0.0.1:{closed_port}"
        config = {"llm": {"backend": "ollama", "host": good, "model": "llama3.1:8b"},
                  "backends": {"ollama": {"hosts": [down]}, "vllm": {"host": down}},
                  "app": {"allow_custom_hosts": False, "fallback_to_embedded": False,
                          "history_db": str(tmp_path / "history.sqlite3")}}
        use_config(tmp_path, monkeypatch, config)
        at = open_app()
        (generate,) = [b for b in at.button if b.label == "Generate"]
        generate.click().run()
        assert any(m.label == "Stop reason" for m in at.metric)
        texts = [element_texts(at)]
        at.selectbox(key="host_ollama").set_value(down).run()  # the host that is down
        (generate,) = [b for b in at.button if b.label == "Generate"]
        generate.click().run()
        assert any("Cannot reach Ollama" in e.value for e in at.error)
        texts.append(element_texts(at))
    shown = "\n".join(texts)
    assert f"127.0.0.1:{closed_port}" in shown and ollama.url in shown
    assert "s3cretHostPW" not in shown and "demo:" not in shown
