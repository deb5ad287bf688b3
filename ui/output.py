"""The run output every page shares: the live answer panel, the statistics, the downloads."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from backends.status import Status
from backends.stream import GenerationStats
from studio.pv.checks import AnswerCheck, check_html, check_run
from studio.pv.structured import check as check_structured
from studio.pv.structured import shown_text
from studio.records.render import (
    RepaintThrottle,
    html_document,
    literal,
    markdown_with_thinking,
    safe_markdown,
    split_blocks,
    with_cursor,
)
from studio.runs.request import (
    IMPORTED,
    PROMPT_TRUNCATED,
    RunParams,
    no_thinking_note,
    run_notes,
)
from studio.runs.runner import Run
from studio.runs.window import cut_prompt_advice

REPAINT_INTERVAL_S = 0.1  # at most ten repaints a second: the page re-sends the whole text
STATUS_ICONS = {Status.FINISHED: "✅", Status.LENGTH: "✂️", Status.REPETITION: "🔁",
                Status.STOPPED: "⏹️", Status.ERROR: "⚠️", Status.RUNNING: "⏳"}


def follow(run: Run, answer_slot: DeltaGenerator, progress_slot: DeltaGenerator,
           thinking_slot: DeltaGenerator | None = None) -> None:
    """Repaint one run's growing answer (and thinking) until it ends, then once more, whole."""
    follow_all(lambda: [run], [answer_slot], [progress_slot], run.wait,
               None if thinking_slot is None else [thinking_slot])


def follow_all(runs: Callable[[], Sequence[Run]], answer_slots: Sequence[DeltaGenerator],
               progress_slots: Sequence[DeltaGenerator], wait: Callable[[float], bool],
               thinking_slots: Sequence[DeltaGenerator] | None = None) -> None:
    """Repaint several growing answers (the Compare panes) until ``wait`` says all ended.

    ``runs()`` gives the runs to show now (a comparison starts new ones each round). Not
    ``st.write_stream``: that re-sends the whole text per token (17 MB for a 4,000-token
    answer). Here each answer is painted at most ten times a second, and in blocks: a
    finished paragraph is sent once, only the growing last one is repainted. A reasoning
    model's thinking streams the same way into its own panel, folded once the answer starts.
    """
    throttle = RepaintThrottle(REPAINT_INTERVAL_S)
    panes: dict[int, _LiveAnswer] = {}

    def pane_of(index: int, run: Run) -> _LiveAnswer:
        pane = panes.get(index)
        if pane is None or pane.run is not run:  # a new round starts a new answer
            thinking = thinking_slots[index] if thinking_slots is not None else None
            pane = panes[index] = _LiveAnswer(run, answer_slots[index], thinking)
        return pane

    while not wait(REPAINT_INTERVAL_S / 2):
        if not throttle.due():
            continue
        for index, run in enumerate(runs()):
            pane_of(index, run).paint()
            progress_slots[index].caption(_progress(run))
    for index, run in enumerate(runs()):
        progress_slots[index].empty()
        pane_of(index, run).paint()


class _Blocks:
    """Markdown painted block by block while it grows: finished blocks are sent once."""

    def __init__(self, slot: DeltaGenerator) -> None:
        self.box = slot.container()
        self.slots: list[DeltaGenerator] = []
        self.painted: list[str] = []

    def paint(self, blocks: list[str], growing: bool) -> None:
        for number, block in enumerate(blocks):
            last = growing and number == len(blocks) - 1
            shown = with_cursor(block) if last else safe_markdown(block)
            if number < len(self.painted) and self.painted[number] == shown:
                continue
            if number == len(self.slots):
                self.slots.append(self.box.empty())
                self.painted.append("")
            self.slots[number].markdown(shown)
            self.painted[number] = shown


class _LiveAnswer:
    """One answer painted while it grows; its thinking live above it, folded once the answer
    starts."""

    def __init__(self, run: Run, slot: DeltaGenerator,
                 thinking_slot: DeltaGenerator | None = None) -> None:
        self.run = run
        self.answer = _Blocks(slot)
        self.thinking_slot = thinking_slot
        self.thinking: _Blocks | None = None
        self.folded = False

    def paint(self) -> None:
        run = self.run
        thinking, text, done = run.thinking, run.text, run.done
        if thinking and self.thinking_slot is not None and not self.folded:
            if text or done:
                show_thinking(self.thinking_slot, thinking, run.stats.thinking_s)
                self.folded = True
            else:
                if self.thinking is None:
                    live = self.thinking_slot.container(border=True)
                    live.caption("💭 Thinking…")
                    self.thinking = _Blocks(live.empty())
                self.thinking.paint(split_blocks(thinking), growing=True)
        if not text:
            return
        if run.request.structured:  # the report of the JSON so far, re-read each repaint
            text = shown_text(text, done, run.status)[0]
        # A one-piece answer is whole when it arrives: one element, so the page never
        # shows its first paragraphs alone (blocks are sent as separate messages).
        if run.streams:
            self.answer.paint(split_blocks(text), growing=not done)
        else:
            self.answer.paint([text], growing=False)


def show_thinking(slot: DeltaGenerator, thinking: str, seconds: float | None) -> None:
    """A reasoning model's thinking, folded (nothing when there is none)."""
    if not thinking.strip():
        slot.empty()
        return
    took = f" · {seconds:.1f} s" if seconds is not None else ""
    with slot.container(), st.expander(f"💭 Thinking{took} · {len(thinking):,} characters"):
        st.markdown(safe_markdown(thinking))


def _progress(run: Run) -> str:
    label = run.request.backend_class.label
    if run.done:
        return f"{STATUS_ICONS.get(run.status, '')} {run.status_label} · {run.elapsed:.1f} s"
    if (ahead := run.queue_position) is not None:
        place = (f"{ahead} run{'s' if ahead != 1 else ''} ahead of this one" if ahead
                 else "next in line")
        return (f"⏳ Queued for {label}: {place} (the server's fair-share cap)… "
                f"{run.elapsed:.1f} s")
    if run.text:
        return f"⏳ Streaming from {label}… {run.elapsed:.1f} s"
    if run.thinking:
        return f"💭 {label} is thinking… {run.elapsed:.1f} s"
    verb = "Waiting for the first token from" if run.streams else "Waiting for"
    return f"⏳ {verb} {label}… {run.elapsed:.1f} s"


def show_answer(text: str, answer_slot: DeltaGenerator, check: AnswerCheck | None = None, *,
                structured: str | None = None) -> None:
    """A finished answer as it was painted live; with its checks, wrong figures struck
    through and figures not found in the data highlighted. ``structured``: the status of a
    structured answer, shown as its report when valid, else as its raw text (literal), with
    the reason."""
    if structured is not None and text:
        shown, verdict = shown_text(text, True, structured)
        if verdict is not None and not verdict.valid:
            with answer_slot.container():
                st.warning(literal(verdict.line), icon="🧾")
                st.code(text, language=None, wrap_lines=True)
            return
        text = shown
    shown = safe_markdown(text) if text else ""
    if check is not None:
        shown = check.highlight(shown)
    answer_slot.markdown(shown)


def structured_status(params: RunParams, status: str) -> str | None:
    """``show_answer``'s ``structured``: the run's status when its answer is structured."""
    return status if params.structured else None


def structured_line(params: RunParams, text: str, status: str) -> str | None:
    """The line under a structured answer: valid, or why not (None for a markdown one)."""
    return check_structured(text, status).line if params.structured else None


def check_lines(check: AnswerCheck) -> str:
    """The lines under an answer that say how its figures check against the prompt's data,
    as literal text: they quote the answer's figures ("$" would read as math) and may name
    an uploaded location."""
    return "\n\n".join(literal(line) for line in check.lines())


class Pane(NamedTuple):
    """The slots of one answer column: progress line, thinking, answer box, footer line, and
    a place for the pane's own controls (Compare's Stop)."""

    progress: DeltaGenerator
    thinking: DeltaGenerator
    answer: DeltaGenerator
    footer: DeltaGenerator
    control: DeltaGenerator


def answer_pane(title: str, key: str, height: int = 640) -> Pane:
    """One column of answers side by side (Compare, History): a title (markdown: names in it
    go through ``literal``), a control, a progress line, the thinking (a reasoning model's),
    a bordered scrolling answer box and a footer."""
    st.markdown(title)
    control, progress, thinking = st.empty(), st.empty(), st.empty()
    with st.container(key=key, border=True, height=height):
        answer = st.empty()
    return Pane(progress, thinking, answer, st.empty(), control)


def show_outcome(run: Run) -> None:
    """Status line (with the error and its fix), statistics and downloads of a run."""
    status = run.status
    icon = STATUS_ICONS.get(status, "")
    if status == Status.ERROR and run.error is not None:
        kept = " The partial answer above is kept." if run.text else ""
        st.error(f"{literal(run.error.message)}{kept}\n\n{literal(run.error.hint)}", icon="⚠️")
    elif status == Status.STOPPED:
        st.info("Stopped. The partial answer above is kept." if run.text
                else "Stopped while the model was thinking: its thinking so far is kept."
                if run.thinking
                else "Stopped before any text arrived.", icon=icon)
    elif status == Status.INTERRUPTED:
        st.warning("Interrupted: the app stopped while this run was going. The partial "
                   "answer is kept.", icon="⏸️")
    elif status == Status.LENGTH:
        st.warning("The answer hit the max tokens limit; raise it in the sidebar for more.",
                   icon=icon)
    elif status == Status.REPETITION:
        st.warning("The answer started repeating itself, so it was stopped; the text so far "
                   "is kept. A higher repeat penalty (sidebar) or another model may help.",
                   icon=icon)
    if (line := structured_line(run.request, run.text, status)) is not None:
        st.caption(f"🧾 {literal(line)}")
    show_notes(run.statistics)
    if (missing := no_thinking_note(run.request.sampling.think, run.thinking, status)) is not None:
        st.caption(f"💭 {missing}")
    show_stats(run.stats, run.status_label, streamed=run.streams)
    if run.record_error:
        st.caption(f"🗄️ {literal(run.record_error)}")
    if run.text or run.thinking:
        downloads(run)


def show_notes(stats: Mapping[str, Any]) -> None:
    """The run's marks (imported, a prompt the server cut, a cold start), each with what it
    means."""
    for note in run_notes(stats):
        if note.startswith(IMPORTED):
            st.caption(f"📥 {literal(note[0].upper() + note[1:])}: recorded from a batch "
                       "runner's results file (Batch page, Import batch results), not run by "
                       "this app; no host or times were measured.")
        elif note == PROMPT_TRUNCATED:
            window = stats.get("context_window")
            st.warning(
                f"**Prompt truncated by the server.** It counted "
                f"{stats.get('prompt_tokens') or 0:,} prompt tokens"
                + (f" in a {window:,}-token window" if window else "")
                + ": it cut the prompt to fit (its start, with the system prompt, goes first) "
                "and answered from what was left, so the grounding check does not grade it. "
                + cut_prompt_advice(stats), icon="✂️")
        else:
            load = stats.get("server_load_s") or 0.0
            st.caption(f"🧊 {note.capitalize()}: the server loaded the model for this run "
                       f"({load:.1f} s), so its times include the load.")


STATS_PER_ROW = 3  # at 1280 px with the sidebar open, four cut "Hit max tokens" short


def show_stats(stats: GenerationStats, stop_reason: str, streamed: bool) -> None:
    """Rows of figures: how it ended, timings, token counts and speeds (client and server).
    Three to a row, the detail of each in its tooltip, so that no label or value is cut
    short on a laptop's screen."""
    def fmt(value: float | int | None, unit: str = "", digits: int = 2) -> str:
        if value is None:
            return "–"
        return f"{value:,}{unit}" if isinstance(value, int) else f"{value:,.{digits}f}{unit}"

    one_piece = "" if streamed else " (one piece)"
    one_piece_help = ("" if streamed else " The answer came in one piece: its first token "
                      "arrived with the last.")
    thought = stats.time_to_first_thinking_s is not None
    with_thinking = ", with thinking" if thought else ""
    counted = (" The server counts thinking and answer tokens together." if thought else "")
    figures = [
        ("Stop reason", stop_reason, "How the run ended."),
        (("Time to first answer token" if thought else "Time to first token") + one_piece,
         fmt(stats.time_to_first_token_s, " s"),
         "From sending the request to the first token of the answer." + one_piece_help),
        ("Total time", fmt(stats.total_time_s, " s"), "From sending the request to the end."),
        ("Prompt tokens", fmt(stats.prompt_tokens) + (" (cut)" if stats.prompt_truncated
                                                      else ""),
         "As the server counted them" + ("; it cut the prompt to fit its window."
                                         if stats.prompt_truncated else ".")),
        # The servers count thinking and answer tokens together: said, not hidden.
        ("Output tokens (with thinking)" if thought else "Output tokens",
         fmt(stats.output_tokens), "As the server counted them." + counted),
        ("Context window", fmt(stats.context_window),
         "The tokens the server gives this model for prompt and answer together."),
        (f"Tokens/s (client{with_thinking})", fmt(stats.client_tokens_per_s, digits=1),
         "Output tokens over the time the app saw them arrive (measured by the app)."
         + counted),
        (f"Tokens/s (server{with_thinking})", fmt(stats.server_tokens_per_s, digits=1),
         "Output tokens over the generation time the server reports (– where it reports "
         "none, as vLLM)." + counted),
        ("Model load" + (" (cold start)" if stats.cold_start else ""),
         fmt(stats.server_load_s, " s"),
         "The time the server spent loading the model for this run"
         + (": it was not loaded before." if stats.cold_start else ".")),
    ]
    if thought:
        figures += [
            ("Time to first thinking token" + one_piece,
             fmt(stats.time_to_first_thinking_s, " s"),
             "From sending the request to the first token of thinking." + one_piece_help),
            ("Thinking time", fmt(stats.thinking_s, " s"),
             "From the first thinking token to the first answer token."),
            ("Thinking tokens", fmt(stats.thinking_tokens),
             "Tokens of thinking, where the server counts them apart."),
            ("Thinking characters", fmt(stats.thinking_chars),
             "The length of the thinking that came back."),
        ]
    for start in range(0, len(figures), STATS_PER_ROW):
        row = figures[start:start + STATS_PER_ROW]
        for column, (label, value, detail) in zip(st.columns(STATS_PER_ROW), row,
                                                   strict=False):
            column.metric(label, value, help=detail)


def downloads(run: Run) -> None:
    """Markdown, sanitized standalone HTML, and JSON with prompts, parameters and stats."""
    request = run.request
    stem = _file_stem(f"{request.preset or 'answer'}-{request.model}")
    title = f"PV recommendation: {request.preset}" if request.preset else "PV LLM Studio answer"
    subtitle = (f"{request.backend_class.label} · {request.model} · "
                f"{run.started_at:%Y-%m-%d %H:%M} UTC · {run.status_label}")
    # A structured answer's files hold its report (or, not valid, its raw text as a code
    # block); the JSON holds the raw answer and whether it is valid.
    text = shown_text(run.text, True, run.status)[0] if run.request.structured else run.text
    md, html, js = st.columns(3)
    md.download_button("⬇ Markdown", markdown_with_thinking(text, run.thinking),
                       f"{stem}.md", "text/markdown", width="stretch",
                       help="Sanitized as on the page: images become links, links other "
                            "than http(s) and mailto are removed, HTML is shown as text. "
                            "The JSON holds the raw answer.")
    checks = check_html(check_run(run.text, request, run.stats.to_dict()))
    html.download_button("⬇ HTML", html_document(text, title, subtitle, run.thinking, checks),
                         f"{stem}.html", "text/html", width="stretch")
    js.download_button("⬇ JSON", json.dumps(run.to_dict(), indent=2), f"{stem}.json",
                       "application/json", width="stretch")


def _file_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80] or "answer"
