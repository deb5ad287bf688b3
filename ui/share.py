"""Share: a button that makes a read-only link to a run or a group (a Compare, Batch or
Evaluation) and shows it to copy. Only the item's owner or an admin gets a link (the store
checks); the Shared page opens it, and lists and revokes one's links."""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from studio.records.render import literal
from studio.records.store import SHARE_GROUP, SHARE_RUN, Group
from ui.state import history, viewer

SHARED_PATH = "shared"  # the Shared page's url_path (app.py)
GROUP_WORDS = {"compare": "comparison", "batch": "batch", "batch-import": "imported batch",
               "evaluation": "evaluation"}
SHARE_HELP = ("Makes a read-only link: whoever opens it (logged in on this server, or anyone "
              "where config.yaml allows) reads it and can run, edit or delete nothing. "
              "Revoke it on the Shared page.")


def group_word(kind: str) -> str:
    """'comparison' for a Compare group: what the page calls a group of this kind."""
    return GROUP_WORDS.get(kind, "group")


def group_title(group: Group) -> str:
    """'Comparison #12' (with its preset where it has one)."""
    title = f"{group_word(group.kind).capitalize()} #{group.id}"
    return f"{title} · {group.preset}" if group.preset else title


def share_url(token: str) -> str:
    """The link to the Shared page with this token: absolute from the browser's address of
    the app where Streamlit knows it, else relative to the app."""
    base = app_url()
    return f"{base}/{SHARED_PATH}?token={token}" if base else f"{SHARED_PATH}?token={token}"


def app_url() -> str:
    """The app's address in the browser ('' where unknown): ``st.context.url`` without the
    current page's path (Streamlit 1.67 leaves it on)."""
    url = (st.context.url or "").rstrip("/")
    ctx = get_script_run_ctx()
    if url and ctx is not None:
        page = ctx.pages_manager.get_pages().get(ctx.page_script_hash)
        path = str(page.get("url_pathname") or "") if page else ""
        if path:
            url = url.removesuffix(f"/{path}")
    return url


def share_action(kind: str, target_id: int, title: str, *, label: str = "🔗 Share",
                 key: str = "") -> None:
    """The Share button of one run (``kind`` ``run``) or group (``group``); once clicked,
    the read-only link as text to copy. One link per item and browser session (a revoked one
    makes way for a new one)."""
    if kind not in (SHARE_RUN, SHARE_GROUP):
        raise ValueError(f"kind must be {SHARE_RUN} or {SHARE_GROUP}, not {kind!r}")
    store = history()
    if store is None:
        return
    slot = f"share_link_{kind}_{target_id}"
    token = st.session_state.get(slot)
    share = store.get_share(token) if token else None
    if share is None or share.revoked:
        st.button(label, key=f"share_{key or f'{kind}_{target_id}'}", help=SHARE_HELP,
                  on_click=_make, args=(kind, target_id, title, slot))
        if (refused := st.session_state.pop(f"{slot}_refused", None)) is not None:
            st.warning(refused, icon="🔒")
        return
    st.caption(f"🔗 Read-only link to {literal(title)}: copy it (the icon at its right). "
               "Revoke it on the Shared page.")
    st.code(share_url(share.token), language=None)


def _make(kind: str, target_id: int, title: str, slot: str) -> None:
    store, who = history(), viewer()
    if store is None or who.anonymous:
        return
    share = store.create_share(kind, target_id, user=who.user, title=title, only=who.only)
    if share is None:
        st.session_state[f"{slot}_refused"] = ("Only its owner or an admin can share this, "
                                               "and it must still be in the history.")
    else:
        st.session_state[slot] = share.token
