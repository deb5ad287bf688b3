"""Model output is untrusted: make it safe to show in the page and to export as HTML.

``safe_markdown`` prepares an answer for ``st.markdown`` (which already escapes raw HTML):
links other than http/https/mailto lose their target, images become plain links so nothing
is fetched automatically (a remote image URL can carry data out: prompt injection), and ``$``
is escaped so dollar amounts are not read as LaTeX. ``html_document`` renders the same text
with the ``markdown`` package and sanitizes the result with nh3 for the HTML download.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable

import markdown as markdown_lib
import nh3

SAFE_SCHEMES = ("http://", "https://", "mailto:")
CURSOR = " ▌"

_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})", re.MULTILINE)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
# [text](url "title") and ![alt](url); the URL may be <bracketed>.
_INLINE = re.compile(r"(!?)\[((?:\\.|[^\[\]\\])*)\]\(\s*"
                     r"(<[^>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)"
                     r"(\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
# ![alt][ref] and ![alt] (reference images).
_REF_IMAGE = re.compile(r"!\[((?:\\.|[^\[\]\\])*)\](\[[^\]]*\])?")
# [ref]: url "title"
_REF_DEF = re.compile(r"^( {0,3}\[[^\]]+\]:[ \t]*)(<[^>\n]*>|\S+)(.*)$", re.MULTILINE)
# <scheme:...> autolinks
_AUTOLINK = re.compile(r"<([A-Za-z][A-Za-z0-9+.\-]{1,31}:[^<>\s]*)>")


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


def _rewrite_links(text: str) -> str:
    def inline(match: re.Match[str]) -> str:
        bang, label, url, title = match.group(1), match.group(2), match.group(3), match.group(4)
        if bang:  # never load an image: show a link the reader may choose to follow
            label = f"🖼 {label or 'image'}"
        if not is_safe_url(url):
            return f"{label} (link removed)"
        return f"[{label}]({url}{title or ''})"

    def ref_image(match: re.Match[str]) -> str:
        return f"[🖼 {match.group(1) or 'image'}]{match.group(2) or ''}"

    def ref_def(match: re.Match[str]) -> str:
        if is_safe_url(match.group(2)):
            return match.group(0)
        return f"{match.group(1)}#link-removed"

    def autolink(match: re.Match[str]) -> str:
        url = match.group(1)
        return match.group(0) if is_safe_url(url) else f"{url} (link removed)"

    text = _INLINE.sub(inline, text)
    text = _REF_IMAGE.sub(ref_image, text)
    text = _REF_DEF.sub(ref_def, text)
    return _AUTOLINK.sub(autolink, text)


def safe_markdown(text: str) -> str:
    """An answer ready for ``st.markdown``: unsafe links disarmed, images not auto-loaded,
    dollar signs literal."""

    def transform(part: str) -> str:
        part = _rewrite_links(part)
        return re.sub(r"(?<!\\)\$", r"\\$", part)

    return _outside_code(text, transform)


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


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem;
       color: #1f2937; line-height: 1.55; }}
header {{ border-bottom: 3px solid #f59e0b; margin-bottom: 1.5rem; }}
header p {{ color: #6b7280; font-size: .9rem; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #d1d5db; padding: .3rem .6rem; }}
pre {{ background: #f3f4f6; padding: .8rem; overflow-x: auto; }}
</style></head>
<body><header><h1>{title}</h1><p>{subtitle}</p></header>
<main>{body}</main></body></html>
"""


def html_document(answer: str, title: str, subtitle: str = "") -> str:
    """A standalone, sanitized HTML page of one answer (the HTML download)."""
    return _PAGE.format(title=html.escape(title), subtitle=html.escape(subtitle),
                        body=markdown_to_safe_html(answer))


class Throttle:
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
