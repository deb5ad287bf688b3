"""Share links in the run history (RunStore's shares): unguessable tokens, made only by the
item's owner or an admin, revoked (and kept) by their maker or an admin."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.records.store import SHARE_GROUP, SHARE_RUN, RunStore
from studio.runs.request import RunRequest


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "history.sqlite3")


def run_of(store: RunStore, user: str, group_id: int | None = None, position: int = 0) -> int:
    request = RunRequest(backend="ollama", host="http://h:11434", model="m", system="s",
                         prompt=f"prompt of {user}")
    run_id = store.start_run(request, "compare" if group_id else "playground", group_id,
                             position, user=user)
    store.finish_run(run_id, f"answer of {user}", "finished")
    return run_id


def test_a_share_has_an_unguessable_token_and_opens_its_run(store: RunStore) -> None:
    run_id = run_of(store, "ann")
    share = store.create_share(SHARE_RUN, run_id, user="ann", title="Run", only="ann")
    assert share is not None and len(share.token) >= 43  # 32 random bytes
    other = store.create_share(SHARE_RUN, run_id, user="ann", only="ann")
    assert other is not None and other.token != share.token
    found = store.get_share(share.token)
    assert found == share and not found.revoked and found.owner == "ann"
    assert [run.id for run in store.shared_runs(found)] == [run_id]


def test_a_group_share_opens_that_groups_runs_only(store: RunStore) -> None:
    group = store.create_group("compare", user="ann")
    panes = [run_of(store, "ann", group, position) for position in range(2)]
    run_of(store, "ann")  # not in the group
    share = store.create_share(SHARE_GROUP, group, user="ann", only="ann")
    assert share is not None
    assert [run.id for run in store.shared_runs(share)] == panes


def test_only_the_owner_or_an_admin_shares_an_item(store: RunStore) -> None:
    run_id = run_of(store, "ann")
    group = store.create_group("batch", user="ann")
    assert store.create_share(SHARE_RUN, run_id, user="bob", only="bob") is None
    assert store.create_share(SHARE_GROUP, group, user="bob", only="bob") is None
    assert store.create_share(SHARE_RUN, 999, user="ann", only=None) is None  # no such run
    admin = store.create_share(SHARE_RUN, run_id, user="root", only=None)
    assert admin is not None and admin.owner == "root"
    assert store.list_shares() == [admin]


def test_unknown_and_malformed_tokens_are_none(store: RunStore) -> None:
    assert store.get_share("x" * 43) is None
    assert store.get_share("") is None
    assert store.get_share("' OR 1=1 --") is None
    with pytest.raises(ValueError):
        store.item_owner("table", 1)


def test_revoke_is_for_the_maker_or_an_admin_and_keeps_the_row(store: RunStore) -> None:
    run_id = run_of(store, "ann")
    share = store.create_share(SHARE_RUN, run_id, user="ann", only="ann")
    assert share is not None
    assert not store.revoke_share(share.token, user="bob", only="bob")
    assert not store.get_share(share.token).revoked  # type: ignore[union-attr]
    assert store.revoke_share(share.token, user="ann", only="ann")
    assert not store.revoke_share(share.token, user="ann", only="ann")  # once
    revoked = store.get_share(share.token)
    assert revoked is not None and revoked.revoked and revoked.revoked_by == "ann"
    again = store.create_share(SHARE_RUN, run_id, user="ann", only="ann")
    assert again is not None and store.revoke_share(again.token, user="root", only=None)


def test_list_shares_an_owners_or_all(store: RunStore) -> None:
    ann = store.create_share(SHARE_RUN, run_of(store, "ann"), user="ann", only="ann")
    bob = store.create_share(SHARE_RUN, run_of(store, "bob"), user="bob", only="bob")
    assert store.list_shares("ann") == [ann]
    assert store.list_shares(None) == [bob, ann]  # newest first


def test_a_deleted_run_leaves_its_share_with_nothing_to_open(store: RunStore) -> None:
    run_id = run_of(store, "ann")
    share = store.create_share(SHARE_RUN, run_id, user="ann", only="ann")
    assert share is not None
    store.delete(run_id)
    assert store.get_share(share.token) == share
    assert store.shared_runs(share) == []
