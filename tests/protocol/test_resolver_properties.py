"""Hypothesis properties of reconciliation: idempotence, and per-field last-writer-wins against an oracle."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk import FieldTimestampWins, ModelPayload, PayloadReconciler, SyncRecord

FIELDS = ["title", "done", "notes"]
values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3))
stamps = st.integers(1, 40)


@st.composite
def records(draw, key: str) -> SyncRecord:
    names = draw(st.sets(st.sampled_from(FIELDS), min_size=1))
    data = {"id": key, **{name: draw(values) for name in names}}
    return SyncRecord(key=key, data=data, timestamps={name: draw(stamps) for name in names})


@st.composite
def scenarios(draw):
    keys = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, min_size=1))
    local = {k: draw(records(k)) for k in keys if draw(st.booleans())}
    incoming = {k: draw(records(k)) for k in keys if draw(st.booleans())}
    deletes = {k: draw(stamps) for k in keys if k not in incoming and draw(st.booleans())}
    return local, ModelPayload("todo.Task", incoming, deletes), draw(st.integers(0, 40)), draw(st.booleans())


def state_of(rows: dict[str, SyncRecord]) -> dict[str, tuple]:
    """Rows as comparable values; a 0 stamp means "never written", the same as no stamp (PROTOCOL.md 9)."""
    return {k: (r.data, {f: t for f, t in r.timestamps.items() if t}) for k, r in rows.items()}


def apply(local: dict[str, SyncRecord], outcome) -> dict[str, SyncRecord]:
    state = dict(local)
    state.update(outcome.to_upsert)
    for key in outcome.to_delete:
        state.pop(key, None)
    return state


@settings(max_examples=300)
@given(scenarios())
def test_applying_the_same_manifest_twice_changes_nothing(scenario) -> None:
    local, payload, checkpoint, prefer_remote = scenario
    reconciler = PayloadReconciler(FieldTimestampWins(prefer_remote_on_tie=prefer_remote))
    once = apply(local, reconciler.reconcile(payload, local, checkpoint))
    twice = apply(once, reconciler.reconcile(payload, once, checkpoint))
    assert state_of(twice) == state_of(once)


@settings(max_examples=300)
@given(scenarios())
def test_conflicting_rows_merge_field_by_field_as_last_writer_wins(scenario) -> None:
    local, payload, _checkpoint, _prefer = scenario
    outcome = PayloadReconciler(FieldTimestampWins()).reconcile(payload, local, checkpoint=0)  # every local row counts as changed
    for key, remote in payload.records.items():
        mine = local.get(key)
        merged = outcome.to_upsert[key]
        if mine is None:
            assert merged is remote
            continue
        for name in set(mine.data) | set(remote.data) - {"id"}:
            local_stamp, remote_stamp = mine.timestamps.get(name, 0), remote.timestamps.get(name, 0)
            winner = remote if remote_stamp > local_stamp else mine
            assert merged.data.get(name) == winner.data.get(name), name
            assert merged.timestamps.get(name, 0) == max(local_stamp, remote_stamp)
