"""A change that would leave a FOREIGN KEY dangling is refused per key; the rest of the round goes through.

A device's new row whose parent was deleted elsewhere before the row reached the server (issue #17's last gap,
scoped or not) does not stop that device's syncs: the row leaves the device with its parent, as sync's own
write (no delete of it reaches anyone), and the conflict log keeps every value of it for the app to restore.
A real server_stub over HTTP on 127.0.0.1, devices on real files.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import pytest

from client_sdk import ConflictStateError, HttpTransport, SyncClient, SyncManifest, Transport
from server_stub import ServerConfig, create_app
from tests.loopback import serve
from tests.reliability.inflight import HookedTransport

SCHEMA = """
CREATE TABLE projects (id TEXT PRIMARY KEY, name TEXT);
CREATE TABLE issues (id TEXT PRIMARY KEY, project_id TEXT REFERENCES projects (id) {action}, title TEXT);
CREATE TABLE comments (id TEXT PRIMARY KEY, issue_id TEXT REFERENCES issues (id) {action}, body TEXT);
"""
MODELS = {"projects": "tracker.Project", "issues": "tracker.Issue", "comments": "tracker.Comment"}
ISSUE, COMMENT = "tracker.Issue", "tracker.Comment"
ACTIONS = ["", "ON DELETE CASCADE"]


class Tracker:
    """A server and its devices: ``a`` deletes, ``b`` was offline meanwhile (its transport lets a test write
    while a round is in flight: ``hooked``)."""

    def __init__(self, folder: Path, stack: ExitStack, action: str) -> None:
        self.folder = folder
        self.stack = stack
        self.schema = SCHEMA.format(action=action)
        config = ServerConfig(database=folder / "server.db", models=MODELS, schema=self.schema, node_id="server")
        self.url = stack.enter_context(serve(create_app(config))) + "/sync/"
        self.hooked = HookedTransport(HttpTransport(self.url, retries=0))
        self.a, self.b = self.device("a"), self.device("b", self.hooked)
        self.write(self.a, "INSERT INTO projects VALUES ('p0', 'kept'), ('p1', 'doomed')",
                   "INSERT INTO issues VALUES ('i0', 'p0', 'old issue')")
        assert self.a.sync().ok and self.b.sync().ok

    def device(self, name: str, transport: Transport | None = None) -> SyncClient:
        path = self.folder / f"{name}.db"
        with closing(sqlite3.connect(path)) as setup:
            setup.executescript(self.schema)
        return self.stack.enter_context(SyncClient(path, models=MODELS, node_id=name,
                                                   transport=transport or HttpTransport(self.url, retries=0)))

    @staticmethod
    def write(client: SyncClient, *statements: str) -> None:
        with client.connection:
            for statement in statements:
                client.connection.execute(statement)

    def server(self, sql: str) -> list[tuple[object, ...]]:
        with closing(sqlite3.connect(self.folder / "server.db")) as server:
            return server.execute(sql).fetchall()

    def delete_p1(self) -> None:
        """``a`` deletes project p1 and syncs, while ``b`` is offline."""
        self.write(self.a, "DELETE FROM projects WHERE id = 'p1'")
        assert self.a.sync().ok


@pytest.fixture(params=ACTIONS, ids=["no action", "cascade"])
def tracker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tracker]:
    with ExitStack() as stack:
        yield Tracker(tmp_path, stack, request.param)


def removed(result_errors: list[dict[str, object]]) -> dict[str, str]:
    """key -> the device's message, for the rows a sync removed with a parent the server deleted."""
    return {str(error["key"]): str(error["message"]) for error in result_errors
            if str(error["message"]).startswith("removed from this device")}


def test_a_new_child_of_a_deleted_parent_leaves_the_device_with_it_and_the_log_keeps_its_values(tracker: Tracker
                                                                                                ) -> None:
    a, b = tracker.a, tracker.b
    tracker.delete_p1()
    # b is offline: it files an issue under p1, comments on it, and starts another project
    tracker.write(b, "INSERT INTO issues VALUES ('i1', 'p1', 'orphan to be')",
                  "INSERT INTO comments VALUES ('c1', 'i1', 'me too')",
                  "INSERT INTO projects VALUES ('p2', 'unrelated')")
    result = b.sync()  # the server refuses i1 and c1 alone and takes p2; p1's delete takes them here
    assert removed(result.errors) == {
        "i1": "removed from this device: it refers to tracker.Project 'p1', which the server deleted (or which left "
              "your view) before this change reached it; its values are in the conflict log",
        "c1": "removed from this device: it refers to tracker.Issue 'i1', removed from this device in this sync; "
              "its values are in the conflict log",
    }
    assert {error["key"] for error in result.errors} == {"i1", "c1"}  # the server's refusals name them too
    assert b.connection.execute("SELECT id FROM projects ORDER BY id").fetchall() == [("p0",), ("p2",)]
    assert b.connection.execute("SELECT id FROM issues").fetchall() == [("i0",)]
    assert b.connection.execute("SELECT count(*) FROM comments").fetchone() == (0,)
    logged = {(entry.model_label, entry.key): entry for entry in b.conflicts()}
    assert {key: {name: sides["local"] for name, sides in entry.fields.items()} for key, entry in logged.items()} == {
        (ISSUE, "i1"): {"id": "i1", "project_id": "p1", "title": "orphan to be"},
        (COMMENT, "c1"): {"id": "c1", "issue_id": "i1", "body": "me too"},
    }
    assert {entry.conflict_type for entry in logged.values()} == {"delete_vs_modify"}
    # nothing is left to push: no delete of rows the server never had, and the next sync moves nothing
    assert b.pending_count() == 0
    assert b.sync().moved_nothing and a.sync().ok
    assert tracker.server("SELECT id FROM projects ORDER BY id") == [("p0",), ("p2",)]
    assert tracker.server("SELECT count(*) FROM _sync_tomb_issues WHERE key = 'i1'") == [(0,)]
    assert tracker.server("PRAGMA foreign_key_check") == []
    # the app restores the issue from the log, under the surviving project: it reaches everyone
    tracker.write(b, "INSERT INTO issues VALUES ('i1', 'p2', 'orphan to be')")
    assert b.sync().ok and a.sync().ok
    assert a.connection.execute("SELECT * FROM issues ORDER BY id").fetchall() == \
        [("i0", "p0", "old issue"), ("i1", "p2", "orphan to be")]


def test_a_row_moved_under_a_deleted_parent_comes_back_as_the_server_holds_it(tracker: Tracker) -> None:
    a, b = tracker.a, tracker.b
    tracker.delete_p1()
    tracker.write(b, "UPDATE issues SET project_id = 'p1', title = 'moved' WHERE id = 'i0'")
    result = b.sync()
    # refused for good (p1 is gone): the server's row comes back with the refusal and replaces the device's
    # (whatever p1's delete would have done to it here), the lost change is logged, no delete of i0 is sent
    assert [error["key"] for error in result.errors] == ["i0"] and not result.ok
    assert b.connection.execute("SELECT * FROM issues").fetchall() == [("i0", "p0", "old issue")]
    assert [(entry.key, entry.conflict_type, {name: sides["local"] for name, sides in entry.fields.items()})
            for entry in b.conflicts()] == [("i0", "both_modified", {"project_id": "p1", "title": "moved"})]
    assert b.pending_count() == 0 and b.sync().moved_nothing
    assert a.sync().ok and a.connection.execute("SELECT * FROM issues").fetchall() == [("i0", "p0", "old issue")]
    assert tracker.server("SELECT * FROM issues") == [("i0", "p0", "old issue")]


def test_an_edit_of_a_child_deleted_with_its_parent_while_it_was_pending_is_logged_not_a_wedge(tracker: Tracker
                                                                                                ) -> None:
    """The server deletes the parent and its child; the device's edit of the child was made while its
    request was at the server, so the answer finds it pending: it goes with both deletes, logged."""
    a, b = tracker.a, tracker.b
    tracker.write(a, "INSERT INTO issues VALUES ('i1', 'p1', 'doomed issue')")
    assert a.sync().ok and b.sync().ok
    tracker.write(a, "DELETE FROM issues WHERE id = 'i1'", "DELETE FROM projects WHERE id = 'p1'")
    assert a.sync().ok
    tracker.write(b, "INSERT INTO projects VALUES ('p2', 'unrelated')")  # gives the round something to push
    tracker.hooked.at_next_exchange(
        "after_answer", lambda: second_writer(b, "UPDATE issues SET title = 'edited' WHERE id = 'i1'"))
    result = b.sync()
    assert set(removed(result.errors)) == {"i1"}
    assert b.conflicts()[0].fields["title"]["local"] == "edited"
    assert b.connection.execute("SELECT count(*) FROM issues WHERE id = 'i1'").fetchone() == (0,)
    assert b.pending_count() == 0 and b.sync().moved_nothing
    assert tracker.server("SELECT id FROM projects ORDER BY id") == [("p0",), ("p2",)]


@pytest.mark.parametrize("point", ["before_send", "after_answer"])
def test_a_second_writer_during_the_sync_loses_nothing(tracker: Tracker, point: str) -> None:
    """Another connection writes while the round is in flight: a new issue under the doomed project (never
    pushed: it goes with the project, logged with its values) and an edit elsewhere (pushed as usual)."""
    a, b = tracker.a, tracker.b
    tracker.delete_p1()
    tracker.write(b, "INSERT INTO issues VALUES ('i1', 'p1', 'orphan to be')")
    tracker.hooked.at_next_exchange(point, lambda: second_writer(
        b, "INSERT INTO issues VALUES ('i2', 'p1', 'written meanwhile')", "UPDATE issues SET title = 'kept' WHERE id = 'i0'"))
    result = b.sync()
    assert set(removed(result.errors)) == {"i1", "i2"}
    assert {entry.key: entry.fields["title"]["local"] for entry in b.conflicts()} == \
        {"i1": "orphan to be", "i2": "written meanwhile"}
    assert b.sync().ok and b.pending_count() == 0 and a.sync().ok
    for device in (a, b):
        assert device.connection.execute("SELECT * FROM issues").fetchall() == [("i0", "p0", "kept")]
    assert tracker.server("SELECT * FROM issues") == [("i0", "p0", "kept")]


def second_writer(client: SyncClient, *statements: str) -> None:
    """Another connection to the device's file, on a thread of its own: it waits for the sync's
    transaction, if one is open, and commits as soon as it can."""
    def run() -> None:
        with closing(sqlite3.connect(client.path, timeout=30)) as other, other:
            other.execute("PRAGMA foreign_keys = ON")
            for statement in statements:
                other.execute(statement)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)


class DropsDeletes:
    """A broken server, once ``broken``: its answers leave out the deletes of ``label``."""

    def __init__(self, inner: Transport, label: str) -> None:
        self.inner = inner
        self.label = label
        self.broken = False

    def exchange(self, manifest: SyncManifest) -> SyncManifest:
        response = self.inner.exchange(manifest)
        if not self.broken:
            return response
        body = response.to_dict()
        for payload in body["payloads"]:
            if payload["model_label"] == self.label:
                payload["deletes"] = {}
        return SyncManifest.from_dict(body).seal()


def test_an_answer_deleting_a_parent_but_not_its_synced_children_is_refused_whole(tmp_path: Path) -> None:
    """A row the device holds with no pending change cannot refer to a row the server deleted unless the
    same answer deletes it too: an answer that does not is broken, and nothing of it is applied."""
    with ExitStack() as stack:
        tracker = Tracker(tmp_path, stack, "")
        broken = DropsDeletes(HttpTransport(tracker.url, retries=0), ISSUE)
        a, b = tracker.a, tracker.device("c", broken)
        tracker.write(a, "INSERT INTO issues VALUES ('i1', 'p1', 'synced')")
        assert a.sync().ok and b.sync().ok
        tracker.write(a, "DELETE FROM issues WHERE id = 'i1'", "DELETE FROM projects WHERE id = 'p1'")
        assert a.sync().ok
        broken.broken = True
        with pytest.raises(ConflictStateError, match="tracker.Issue 'i1' refers to tracker.Project 'p1'"):
            b.sync()
        assert b.connection.execute("SELECT id FROM projects ORDER BY id").fetchall() == [("p0",), ("p1",)]
        assert b.connection.execute("SELECT id FROM issues ORDER BY id").fetchall() == [("i0",), ("i1",)]
