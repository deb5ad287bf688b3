"""The run output every page shares: the live answer panel, the statistics, the downloads."""

from __future__ import annotations

import json
import re

import streamlit as st

from backends.base import GenerationStats
from studio.connection import BACKEND_LABELS
from studio.render import Throttle, html_document, safe_markdown, with_cursor
from studio.runner import ERROR, LENGTH, STOPPED, Run

REPAINT_INTERVAL_S = 0.1  # at most ten repaints a second: the page re-sends the whole text
STATUS_ICONS = {"finished": "✅", LENGTH: "✂️", STOPPED: "⏹️", ERROR: "⚠️", "running": "⏳"}


def follow(run: Run, answer_slot: st.delta_generator.DeltaGenerator,
           progress_slot: st.delta_generator.DeltaGenerator) -> None:
    """Repaint the growing answer until the run ends, then paint it once more, whole.

    Not ``st.write_stream``: that re-sends the whole text per token (17 MB for a
    4,000-token answer); a throttled placeholder sends about a tenth of the frames.
    """
    throttle = Throttle(REPAINT_INTERVAL_S)
    painted = ""
    label = BACKEND_LABELS.get(run.request.backend, run.request.backend)
    while not run.wait(REPAINT_INTERVAL_S / 2):
        if not throttle.due():
            continue
        text = run.text
        if text and text != painted:
            answer_slot.markdown(with_cursor(text))
            painted = text
        if not text:
            verb = "Waiting for the first token from" if run.streams else "Waiting for"
            progress_slot.caption(f"⏳ {verb} {label}… {run.elapsed:.1f} s")
        else:
            progress_slot.caption(f"⏳ Streaming from {label}… {run.elapsed:.1f} s")
    progress_slot.empty()
    answer_slot.markdown(safe_markdown(run.text) if run.text else "")


def show_answer(run: Run, answer_slot: st.delta_generator.DeltaGenerator) -> None:
    """A finished run's answer, as it was painted live."""
    answer_slot.markdown(safe_markdown(run.text) if run.text else "")


def show_outcome(run: Run) -> None:
    """Status line (with the error and its fix), statistics and downloads of a run."""
    status = run.status
    icon = STATUS_ICONS.get(status, "")
    if status == ERROR and run.error is not None:
        kept = " The partial answer above is kept." if run.text else ""
        st.error(f"{run.error.message}{kept}\n\n{run.error.hint}", icon="⚠️")
    elif status == STOPPED:
        st.info("Stopped. The partial answer above is kept." if run.text
                else "Stopped before any text arrived.", icon=icon)
    elif status == LENGTH:
        st.warning("The answer hit the max tokens limit; raise it in the sidebar for more.",
                   icon=icon)
    show_stats(run.stats, run.status_label, streamed=run.streams)
    if run.text:
        downloads(run)


def show_stats(stats: GenerationStats, stop_reason: str, streamed: bool) -> None:
    """One row of figures: timings, token counts and speeds (client and server)."""
    def fmt(value: float | int | None, unit: str = "", digits: int = 2) -> str:
        if value is None:
            return "–"
        return f"{value:,}{unit}" if isinstance(value, int) else f"{value:,.{digits}f}{unit}"

    one_piece = "" if streamed else " (one piece)"
    rows = [
        [("Time to first token", fmt(stats.time_to_first_token_s, " s") + one_piece),
         ("Total time", fmt(stats.total_time_s, " s")),
         ("Output tokens", fmt(stats.output_tokens)),
         ("Prompt tokens", fmt(stats.prompt_tokens))],
        [("Tokens/s (client)", fmt(stats.client_tokens_per_s, digits=1)),
         ("Tokens/s (server)", fmt(stats.server_tokens_per_s, digits=1)),
         ("Model load", fmt(stats.server_load_s, " s")),
         ("Stop reason", stop_reason)],
    ]
    for row in rows:
        for column, (label, value) in zip(st.columns(len(row)), row, strict=True):
            column.metric(label, value)


def downloads(run: Run) -> None:
    """Markdown, sanitized standalone HTML, and JSON with prompts, parameters and stats."""
    request = run.request
    stem = _file_stem(f"{request.preset or 'answer'}-{request.model}")
    title = f"PV recommendation: {request.preset}" if request.preset else "PV LLM Studio answer"
    subtitle = (f"{BACKEND_LABELS.get(request.backend, request.backend)} · {request.model} · "
                f"{run.started_at:%Y-%m-%d %H:%M} UTC · {run.status_label}")
    md, html, js = st.columns(3)
    md.download_button("⬇ Markdown", run.text, f"{stem}.md", "text/markdown",
                       use_container_width=True)
    html.download_button("⬇ HTML", html_document(run.text, title, subtitle), f"{stem}.html",
                         "text/html", use_container_width=True)
    js.download_button("⬇ JSON", json.dumps(run.to_dict(), indent=2), f"{stem}.json",
                       "application/json", use_container_width=True)


def _file_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80] or "answer"
