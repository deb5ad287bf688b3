"""Model output is untrusted: make it safe to show in the page and to export as HTML.

``safe_markdown`` prepares an answer for ``st.markdown`` (which already escapes raw HTML):
links other than http/https/mailto lose their target, images become plain links so nothing
is fetched automatically (a remote image URL can carry data out: prompt injection), and ``$``
is escaped so dollar amounts are not read as LaTeX. ``html_document`` renders the same text
with the ``markdown`` package and sanitizes the result with nh3 for the HTML download;
``markdown_file`` makes the Markdown download as safe (raw HTML escaped too).

Text that is not a model's answer but that a user or a server controls (model names, hosts,
presets, file names, custom ids, error messages) is never markdown: ``literal`` escapes it.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import markdown as markdown_lib
import nh3
from markdown_it import MarkdownIt

SAFE_SCHEMES = ("http://", "https://", "mailto:")
CURSOR = " ▌"

_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})", re.MULTILINE)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
# [text](url "title") and ![alt](url) in their common form, rewritten readably first.
_INLINE = re.compile(r"(!?)\[((?:\\.|[^\[\]\\])*)\]\(\s*"
                     r"(<[^>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)"
                     r"(\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
_LINK_TARGET = re.compile(r"\]\(")  # where any inline link's destination starts
# [ref]: url - a link reference definition; the URL may be on the next line.
_REF_DEF = re.compile(r"^( {0,3})\[((?:\\.|[^\[\]\\])+)\]:([^\n]*)", re.MULTILINE)
_AUTOLINK = re.compile(r"<([A-Za-z][A-Za-z0-9+.\-]{1,31}:[^<>\s]*)>")
# Every ASCII punctuation character: CommonMark lets a backslash escape any of them, and
# escaped, none starts markdown (links, images, emphasis, entities, HTML, setext headings,
# autolinks, Streamlit's :color[] and $LaTeX$).
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
# A "<" that no backslash escapes (an even number of backslashes before it).
_BARE_ANGLE = re.compile(r"(?<!\\)((?:\\\\)*)<")

# The verifier: a CommonMark parser, as the browser's renderer is. It accepts every link
# scheme (markdown-it drops javascript: itself) so that it sees what a laxer renderer would.
_commonmark = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
_commonmark.validateLink = lambda url: True  # type: ignore[method-assign]
# The same, reading raw HTML as a Markdown viewer would: for the Markdown download.
_commonmark_html = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
_commonmark_html.validateLink = lambda url: True  # type: ignore[method-assign]


def is_safe_url(url: str) -> bool:
    """True for http(s)/mailto URLs and in-page anchors, judged after the decoding a
    browser or markdown renderer would do (entities, backslash escapes, hidden whitespace)."""
    cleaned = _normalized_url(url)
    return cleaned.startswith("#") or cleaned.lower().startswith(SAFE_SCHEMES)


def _normalized_url(url: str) -> str:
    url = url.strip()
    if url.startswith("<") and url.endswith(">"):
        url = url[1:-1]
    url = html.unescape(url).replace("\\", "")
    return "".join(ch for ch in url if ch.isprintable() and not ch.isspace())


def _outside_code(text: str, transform: Callable[[str], str]) -> str:
    """Apply ``transform`` to the text outside fenced code blocks and inline code spans."""
    pieces: list[str] = []
    position = 0
    inside: str | None = None
    block_start = 0
    for match in _FENCE.finditer(text):
        fence = match.group(2)
        if inside is None:
            pieces.append(_outside_spans(text[position:match.start()], transform))
            inside, block_start = fence, match.start()
        elif fence[0] == inside[0] and len(fence) >= len(inside):
            line_end = text.find("\n", match.end())
            end = len(text) if line_end == -1 else line_end
            pieces.append(text[block_start:end])
            position, inside = end, None
    if inside is not None:
        pieces.append(text[block_start:])  # an unclosed fence runs to the end (streaming)
    else:
        pieces.append(_outside_spans(text[position:], transform))
    return "".join(pieces)


def _outside_spans(text: str, transform: Callable[[str], str]) -> str:
    pieces: list[str] = []
    position = 0
    for match in _CODE_SPAN.finditer(text):
        pieces.append(transform(text[position:match.start()]))
        pieces.append(match.group(0))
        position = match.end()
    pieces.append(transform(text[position:]))
    return "".join(pieces)


def _target_is_safe(rest: str) -> bool:
    """Is the link destination at the start of ``rest`` (the text after ``](`` or ``]:``)
    safe? Judged from its beginning alone, so brackets or parentheses nested in the label or
    the URL cannot hide it."""
    rest = rest.lstrip(" \t\r\n")
    if rest.startswith("<"):
        rest = rest[1:]
    head = re.split(r"[\s>]", rest, maxsplit=1)[0]
    return is_safe_url(head)


def _rewrite_links(text: str) -> str:
    def readable(match: re.Match[str]) -> str:
        bang, label, url, title = match.groups()
        if bang:
            label = f"🖼 {label or 'image'}"
        if not is_safe_url(url):
            return f"{label} (link removed)"
        return f"[{label}]({url}{title or ''})"

    # The common forms, readably: "label (link removed)"; an image becomes a link.
    text = _INLINE.sub(readable, text)
    # Then whatever that missed (nested brackets, odd titles...), by a rule that needs no
    # parsing. Images never load on their own: "![" becomes "[🖼 ", a link.
    text = re.sub(r"(?<!\\)!\[", "[🖼 ", text)
    # An unsafe destination loses its link: "](" becomes "]\(", shown as plain text.
    pieces: list[str] = []
    position = 0
    for match in _LINK_TARGET.finditer(text):
        if not _target_is_safe(text[match.end():]):
            pieces.append(text[position:match.start()] + "]\\(")
            position = match.end()
    pieces.append(text[position:])
    text = "".join(pieces)
    text = _REF_DEF.sub(lambda m: _disarm_definition(m, text), text)
    return _AUTOLINK.sub(
        lambda m: m.group(0) if is_safe_url(m.group(1)) else f"{m.group(1)} (link removed)",
        text)


def _disarm_definition(match: re.Match[str], text: str) -> str:
    """``[r]: url``: an unsafe URL on the line becomes ``#link-removed``; one on the next line
    makes the line stop being a definition (``\\[r]:``)."""
    indent, label, same_line = match.groups()
    if same_line.strip():
        return match.group(0) if _target_is_safe(same_line) \
            else f"{indent}[{label}]: #link-removed"
    if _target_is_safe(text[match.end():]):
        return match.group(0)
    return f"{indent}\\[{label}]:"


def _has_unsafe_link_or_image(text: str) -> bool:
    """What a CommonMark parser makes of ``text``: any image, or any link not http(s)/mailto."""
    for block in _commonmark.parse(text):
        for token in block.children or ():
            if token.type == "image":
                return True
            if token.type == "link_open" and not is_safe_url(str(token.attrGet("href") or "")):
                return True
    return False


def literal(text: str) -> str:
    """Text a user or a server controls (a model or file name, a host, an error message, a
    custom id) for any Streamlit text that renders markdown (st.markdown, st.caption,
    st.error/warning/info/success, subheaders, button, expander and progress labels): every
    ASCII punctuation character backslash-escaped, so it shows exactly as typed and never
    becomes a link, an image (fetched by the browser), emphasis, a heading or HTML. (A bare
    URL in it stays a URL: Streamlit's GFM renderer may still link it, with the URL itself as
    the link's text; nothing is fetched and no target is hidden.)"""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


DASH = "–"  # a figure that is missing, as every table and statistic shows it


def stamp(stored: str, seconds: bool = False) -> str:
    """A stored UTC time as a page shows it: '2026-12-05 04:46' (``seconds``: ':11' more)."""
    return stored[:19 if seconds else 16].replace("T", " ")


def dashes(rows: Iterable[Mapping[str, Any]],
           optional: Collection[str] = ()) -> list[dict[str, Any]]:
    """Table rows as a page shows them: a dash where a value is missing (None), never the
    word "None"; the ``optional`` columns left out when no row has a value in them. A column
    with a dash is text throughout (a table column has one type)."""
    rows = list(rows)
    empty = {name for name in optional if all(row.get(name) is None for row in rows)}
    dashed = {name for row in rows for name, value in row.items() if value is None}
    return [{name: DASH if value is None else str(value) if name in dashed else value
             for name, value in row.items() if name not in empty} for row in rows]


def safe_markdown(text: str) -> str:
    """An answer ready for ``st.markdown``: unsafe links disarmed, images not auto-loaded,
    dollar signs literal. The result is checked with a CommonMark parser; if anything unsafe
    slipped through (syntax the rewrite misjudged), the answer is shown as plain text."""

    def transform(part: str) -> str:
        part = _rewrite_links(part)
        return re.sub(r"(?<!\\)\$", r"\\$", part)

    result = _outside_code(text, transform)
    if _has_unsafe_link_or_image(result):
        return literal(text)
    return result


def with_cursor(text: str) -> str:
    """The growing answer with a typing cursor, for repaints while the run goes on."""
    return safe_markdown(text) + CURSOR


_ALLOWED_TAGS = {"a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "div", "dl", "dt",
                 "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "li", "ol", "p", "pre",
                 "span", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead", "tr",
                 "ul"}


def markdown_to_safe_html(text: str) -> str:
    """Render markdown to an HTML fragment with no scripts, event handlers, unsafe links or
    images (nh3 with an allow-list; ``markdown`` itself passes raw HTML through)."""
    body = markdown_lib.markdown(_outside_code(text, _rewrite_links),
                                 extensions=["tables", "fenced_code", "sane_lists"])
    return nh3.clean(body, tags=_ALLOWED_TAGS,
                     clean_content_tags={"script", "style", "iframe", "object", "svg", "math"},
                     attributes={"a": {"href", "title"}, "td": {"align"}, "th": {"align"}},
                     url_schemes={"http", "https", "mailto"},
                     link_rel="noopener noreferrer nofollow")


# The one page template of every HTML the app writes (an answer, a comparison report): no
# script can run (CSP), nothing is fetched from elsewhere, the body is sanitized by the caller.
_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem;
       color: #1f2937; line-height: 1.55; }}
body.wide {{ max-width: none; margin: 2rem; }}
header {{ border-bottom: 3px solid #f59e0b; margin-bottom: 1.5rem; }}
header p, .meta {{ color: #6b7280; font-size: .9rem; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
td, th {{ border: 1px solid #d1d5db; padding: .3rem .6rem; }}
pre {{ background: #f3f4f6; padding: .8rem; overflow-x: auto; }}
pre.prompt {{ white-space: pre-wrap; max-height: 24rem; overflow-y: auto; }}
dt {{ font-weight: 600; }}
dd {{ margin: 0 0 .5rem 1.5rem; }}
details.thinking {{ color: #4b5563; border-left: 3px solid #d1d5db; padding-left: .8rem; }}
.panes {{ display: flex; gap: 1rem; align-items: flex-start; }}
.panes section {{ flex: 1; border: 1px solid #d1d5db; border-radius: 8px; padding: 0 1rem;
                  min-width: 0; }}
</style></head>
<body class="{width}"><header><h1>{title}</h1><p>{subtitle}</p></header>
<main>{body}</main></body></html>
"""


def report_page(title: str, subtitle: str, body_html: str, *, wide: bool = False) -> str:
    """A standalone HTML page around ``body_html``, which must already be safe (sanitized
    or escaped); ``wide`` for side-by-side panes."""
    return _PAGE.format(title=html.escape(title), subtitle=html.escape(subtitle),
                        body=body_html, width="wide" if wide else "")


def html_document(answer: str, title: str, subtitle: str = "", thinking: str = "",
                  checks_html: str = "") -> str:
    """A standalone, sanitized HTML page of one answer (the HTML download); a reasoning
    model's thinking folded above it, its checks (``checks_html``, already escaped) below."""
    return report_page(title, subtitle, thinking_html(thinking) + markdown_to_safe_html(answer)
                       + checks_html)


def thinking_html(thinking: str) -> str:
    """The thinking as a folded, sanitized ``<details>`` block ('' when there is none)."""
    if not thinking.strip():
        return ""
    return (f"<details class=thinking><summary>Thinking</summary>"
            f"{markdown_to_safe_html(thinking)}</details>")


def markdown_file(text: str) -> str:
    """Markdown for a file opened elsewhere (a Markdown viewer, an editor's preview): unsafe
    links disarmed and images made links, as on the page, and raw HTML escaped (``\\<``),
    since viewers may render it. Checked with a CommonMark parser that reads HTML; if
    anything active slipped through, the text is escaped whole (``literal``)."""

    def transform(part: str) -> str:
        return _BARE_ANGLE.sub(lambda m: f"{m.group(1)}\\<", _rewrite_links(part))

    result = _outside_code(text, transform)
    if _has_unsafe_link_or_image(result) or _has_html(result):
        return literal(text)
    return result


def _has_html(text: str) -> bool:
    for block in _commonmark_html.parse(text):
        if block.type == "html_block" or any(token.type == "html_inline"
                                             for token in block.children or ()):
            return True
    return False


def markdown_with_thinking(answer: str, thinking: str = "") -> str:
    """The Markdown download, sanitized (``markdown_file``): the thinking folded in a
    ``<details>`` block, then the answer. The raw text is in the JSON download."""
    if not thinking.strip():
        return markdown_file(answer)
    return (f"<details>\n<summary>Thinking</summary>\n\n{markdown_file(thinking.strip())}\n\n"
            f"</details>\n\n{markdown_file(answer)}")


def split_blocks(text: str) -> list[str]:
    """Cut markdown at blank lines outside fenced code: the pieces a growing answer is painted
    in. Finished pieces are painted once; only the last one, still growing, is repainted."""
    blocks: list[str] = []
    current: list[str] = []
    fence = ""
    for line in text.split("\n"):
        marker = _FENCE.match(line)
        if marker:
            if not fence:
                fence = marker.group(2)
            elif marker.group(2)[0] == fence[0] and len(marker.group(2)) >= len(fence):
                fence = ""
        if not line.strip() and not fence:
            if current:
                blocks.append("\n".join(current))
                current = []
            continue
        current.append(line)
    if current or not blocks:
        blocks.append("\n".join(current))
    return blocks


@dataclass(frozen=True)
class Mark:
    """A span of display markdown to wrap: ``template`` holds ``{text}``, the span's text."""

    start: int
    end: int
    template: str


def mark(markdown: str, marks: Iterable[Mark]) -> str:
    """``markdown`` with each span wrapped by its mark; the first of overlapping marks wins.
    A span's escaped "\\$" keeps its backslash inside the mark."""
    pieces: list[str] = []
    position = 0
    for item in sorted(marks, key=lambda m: m.start):
        start = item.start - 1 if markdown[item.start - 1:item.start] == "\\" else item.start
        if start < position:
            continue
        pieces.append(markdown[position:start])
        pieces.append(item.template.format(text=markdown[start:item.end]))
        position = item.end
    pieces.append(markdown[position:])
    return "".join(pieces)


class RepaintThrottle:
    """Says when a repaint is due: at most once per ``interval`` seconds."""

    def __init__(self, interval: float = 0.1, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._last = float("-inf")

    def due(self) -> bool:
        now = self._clock()
        if now - self._last >= self.interval:
            self._last = now
            return True
        return False
