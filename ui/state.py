"""Session state the pages share: what app.py prepared, and keeping values across pages."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
from streamlit.runtime import Runtime
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

from studio.records.render import literal
from studio.records.store import RunStore
from studio.runs.request import RunParams
from studio.runs.runner import Recording, Watcher
from studio.settings.config import Settings


def require_frame() -> None:
    """Run this page inside app.py's frame (config, sidebar, navigation).

    A new server's first request for /compare makes Streamlit run pages/compare.py on its own:
    its legacy multipage mode for a pages/ folder, which only app.py's st.navigation turns off.
    Then turn it off here and run again, through app.py, on the same URL.
    """
    if "_settings" not in st.session_state:
        PagesManager.uses_pages_directory = False
        st.rerun()


def settings() -> Settings:
    value: Settings = st.session_state["_settings"]
    return value


@dataclass(frozen=True)
class Viewer:
    """Who uses this session: their name ('' without a login), and whether they see every
    run (no login, or an admin) or only their own."""

    user: str = ""
    sees_all: bool = True
    anonymous: bool = False  # a share link opened without a login: that item, nothing else

    @property
    def only(self) -> str | None:
        """The user filter for the history's queries: None for everyone's runs."""
        return None if self.sees_all else self.user


def viewer() -> Viewer:
    value: Viewer = st.session_state.get("_viewer", Viewer())
    return value


def current_selection() -> RunParams:
    """What the sidebar picked in this run of the page."""
    value: RunParams = st.session_state["_selection"]
    return value


def keep(*keys: str) -> None:
    """Streamlit drops the state of widgets it did not draw in the previous run (a page
    switch, a hidden host box). Writing the values back each run keeps them."""
    state = st.session_state
    for key in keys:
        if key in state:
            state[key] = state[key]


@st.cache_resource(show_spinner=False)
def _open_history(path: str) -> RunStore | str:
    """One store per database file for the whole server (it is thread-safe). Runs left
    'running' by an earlier process become 'interrupted', their partial text kept."""
    try:
        store = RunStore(path)
        store.mark_interrupted()
    except Exception as exc:  # a corrupt or newer database: the app works, without history
        return f"The run history at {path} cannot be opened: {exc}"
    return store


def history() -> RunStore | None:
    store = _open_history(settings().history_db)
    if isinstance(store, str):
        st.warning(literal(store), icon="🗄️")
        return None
    return store


def recording(page: str, group_id: int | None = None, position: int = 0) -> Recording | None:
    """How a run of this page is recorded in the history (None when it is unavailable)."""
    store = history()
    return Recording(store, page, group_id, position, viewer().user, watcher()) \
        if store is not None else None


def watcher() -> Watcher:
    """Watches this browser session for the runs its page starts: once the tab has closed
    (its websocket gone) for ``app.stop_unwatched_after_s``, they stop. Streamlit's runtime
    knows which sessions are connected; without one (AppTest) the session always counts."""
    ctx = get_script_run_ctx()
    if ctx is None or not Runtime.exists():
        return Watcher(lambda: True, settings().stop_unwatched_after_s)
    runtime, session_id = Runtime.instance(), ctx.session_id
    return Watcher(lambda: runtime.is_active_session(session_id),
                   settings().stop_unwatched_after_s)
