"""The locations a Batch or an Evaluation runs: the presets (all or some) or an uploaded CSV,
and the check that every row's prompt may be sent. Keys are prefixed by the page, so each
page keeps its own choice."""

from __future__ import annotations

import streamlit as st

from studio.pv.library import load_locations
from studio.pv.location import COLUMNS, Location
from studio.pv.locations_csv import parse_locations_csv
from studio.records.render import literal
from studio.records.uploads import UploadError, read_upload
from studio.runs.batch import BatchSpec
from studio.runs.prompt_check import prompt_problem
from ui.state import settings

MAX_UPLOAD_BYTES = 1_000_000
UPLOAD = "Upload a CSV"


def scenarios_picker(prefix: str) -> list[Location]:
    """The presets (all or some), or the rows of an uploaded CSV that load. Widget keys:
    ``{prefix}_source``, ``{prefix}_upload``, ``{prefix}_locations``."""
    source = st.radio("Scenarios", ["Preset locations", UPLOAD], horizontal=True,
                      key=f"{prefix}_source")
    scenarios = load_locations()
    if source == UPLOAD:
        upload = st.file_uploader("Scenarios CSV", type=["csv"], key=f"{prefix}_upload",
                                  help=f"Columns as in presets/locations.csv: {', '.join(COLUMNS)}")
        scenarios = []
        if upload is not None:
            try:
                text: str | None = read_upload(upload.name, upload.getvalue(),
                                               MAX_UPLOAD_BYTES)
            except UploadError as exc:
                text = None
                st.error(literal(str(exc)), icon="⚠️")
            if text is not None:
                parsed = parse_locations_csv(text)
                if parsed.file_problem:
                    st.error(f"{literal(upload.name)}: {literal(parsed.file_problem)}",
                             icon="⚠️")
                scenarios = parsed.locations
                for note in parsed.notes:
                    st.info(literal(note), icon="ℹ️")
                if parsed.row_problems:
                    count = len(parsed.row_problems)
                    st.warning(f"{count:,} row{'s' if count != 1 else ''} skipped:\n\n"
                               + "\n".join(f"- {literal(str(problem))}"
                                           for problem in parsed.row_problems[:50])
                               + ("\n- …" if count > 50 else ""), icon="⚠️")
                if scenarios:
                    st.success(f"{len(scenarios)} scenario(s) ready.")
    else:
        names = st.multiselect("Locations", [s.name for s in scenarios],
                               default=[s.name for s in scenarios], key=f"{prefix}_locations")
        scenarios = [s for s in scenarios if s.name in names]
    return scenarios


def sendable(spec: BatchSpec) -> bool:
    """Every row's prompt is under app.max_prompt_chars; else say which row is not."""
    for index, location in enumerate(spec.scenarios):
        request = spec.request(location)
        if problem := prompt_problem(request.system, request.prompt,
                                     settings().max_prompt_chars):
            st.warning(f"Row {literal(f'#{index + 1} {location.name}')}: {problem}", icon="✏️")
            return False
    return True
