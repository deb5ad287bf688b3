"""The pieces the static HTML reports share (a comparison's, an evaluation's): a report sent
where no server is reachable says what was asked (the prompts), of what (the parameters of
each pane or choice, with the model's digest where its server gives one), and what its figures
mean (the definitions). Every string in them is a user's or a server's: escaped, never markup;
the prompts are shown as the literal text that was sent.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from backends import BACKENDS
from backends.http import redact
from studio.runs.request import RunParams

NOT_REPORTED = "not reported by the server"


def digest_text(digests: Iterable[str | None]) -> str:
    """The model digests a pane's or choice's runs recorded (several when the model changed
    between them), or that the server reports none."""
    found = sorted({digest for digest in digests if digest})
    return ", ".join(found) or NOT_REPORTED


@dataclass(frozen=True)
class Column:
    """One pane of a comparison or choice of an evaluation, as its report lists it."""

    label: str
    params: RunParams
    digest: str  # digest_text()
    extra: Mapping[str, str] = field(default_factory=dict)  # repeats, concurrency...


def _backend(params: RunParams) -> str:
    known = BACKENDS.get(params.backend)
    return known.label if known else params.backend


# The parameters' rows, in the words of the pages (the host without its credentials).
_PARAMETERS: tuple[tuple[str, Callable[[Column], object]], ...] = (
    ("Backend", lambda column: _backend(column.params)),
    ("Model", lambda column: column.params.model),
    ("Model digest", lambda column: column.digest),
    ("Host", lambda column: redact(column.params.host) or "–"),
    ("Max tokens", lambda column: column.params.sampling.max_tokens),
    ("Temperature", lambda column: column.params.sampling.temperature),
    ("Repeat penalty", lambda column: column.params.sampling.repeat_penalty
     if column.params.sampling.repeat_penalty is not None else "server default"),
    ("Think", lambda column: column.params.sampling.think or "server default"),
    ("Answer format", lambda column: column.params.answer_format.label),
    ("Delivery", lambda column: column.params.delivery),
)


def parameters_html(columns: Sequence[Column]) -> str:
    """The parameters as a table: a row per setting, a column per pane or choice."""
    extras = list(dict.fromkeys(name for column in columns for name in column.extra))
    rows = [(name, [str(read(column)) for column in columns]) for name, read in _PARAMETERS]
    rows += [(name, [column.extra.get(name, "–") for column in columns]) for name in extras]
    return table_html(["", *(column.label for column in columns)],
                      ([name, *values] for name, values in rows))


def prompts_html(system: str, prompt: str | None = None) -> str:
    """The system prompt and (when there is one for the whole report) the user prompt, as
    the literal text that was sent."""
    user = "" if prompt is None else f"<h3>User prompt</h3>{prompt_html(prompt)}"
    return f"<h3>System prompt</h3>{prompt_html(system)}{user}"


def prompt_html(text: str) -> str:
    """One prompt, escaped, its lines kept."""
    return f"<pre class=prompt>{html.escape(text) or '(empty)'}</pre>"


def definitions_html(definitions: Mapping[str, str]) -> str:
    """What each figure or check means, as a definition list."""
    items = "".join(f"<dt>{html.escape(name)}</dt><dd>{html.escape(text)}</dd>"
                    for name, text in definitions.items())
    return f"<dl>{items}</dl>"


def table_html(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table of text, every cell escaped."""
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(value)}</td>" for value in row)
                    + "</tr>" for row in rows)
    header = "".join(f"<th>{html.escape(name)}</th>" for name in head)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{cells}</tbody></table>"
