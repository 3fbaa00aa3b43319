"""The throwaway PostgreSQL cluster the server tests run on (``tests/pgcluster.py``), end to end with psycopg."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pgcluster import PostgresCluster, find_binaries, unavailable_reason

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgres]')")


def test_a_fresh_database_takes_a_table_its_rows_and_gives_them_back(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as connection:
        connection.execute("CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, pinned BOOLEAN)")
        connection.execute("INSERT INTO notes VALUES (%s, %s, %s), (%s, %s, %s)", ("n1", "milk", True, "n2", "eggs", False))
        connection.commit()
        assert connection.execute("SELECT id, body, pinned FROM notes ORDER BY id").fetchall() == [
            ("n1", "milk", True), ("n2", "eggs", False)]


def test_two_connections_see_each_others_committed_rows_and_nothing_uncommitted(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as first, psycopg.connect(postgres_url) as second:
        first.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
        first.commit()
        first.execute("INSERT INTO items VALUES (1)")
        assert second.execute("SELECT id FROM items").fetchall() == []  # not committed yet
        second.rollback()
        first.commit()
        assert second.execute("SELECT id FROM items").fetchall() == [(1,)]
        second.execute("INSERT INTO items VALUES (2)")
        second.commit()
        assert first.execute("SELECT id FROM items ORDER BY id").fetchall() == [(1,), (2,)]


def test_each_test_gets_an_empty_database_of_its_own(postgres_cluster: PostgresCluster, postgres_url: str) -> None:
    other = postgres_cluster.create_database()
    try:
        assert other != postgres_url
        with psycopg.connect(postgres_url) as connection:
            connection.execute("CREATE TABLE mine (id INTEGER)")
            connection.commit()
        with psycopg.connect(other) as connection:
            tables = connection.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
            assert tables.fetchall() == []
    finally:
        postgres_cluster.drop_database(other)
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        psycopg.connect(other)


def test_the_cluster_listens_on_loopback_only_and_stop_removes_everything() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = PostgresCluster().start()
    try:
        folder = cluster.folder
        assert folder is not None and (folder / "data" / "postmaster.pid").exists()
        url = cluster.url
        with psycopg.connect(url) as connection:
            assert connection.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
            assert connection.execute("SHOW unix_socket_directories").fetchone() == (str(folder),)
    finally:
        cluster.stop()
    assert not folder.exists() and cluster.folder is None
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5)
    cluster.stop()  # a second stop is harmless


def test_without_server_binaries_the_reason_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_BIN", str(tmp_path))
    assert find_binaries() is None
    assert unavailable_reason() == f"PG_BIN={tmp_path} does not hold PostgreSQL's initdb, pg_ctl, postgres"
    monkeypatch.delenv("PG_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("tests.pgcluster.DEBIAN_FOLDERS", tmp_path / "none")
    assert unavailable_reason() == ("PostgreSQL server binaries not found "
                                    "(apt-get install postgresql, or set PG_BIN=/path/to/bin)")
