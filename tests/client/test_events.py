"""What a window listens to (issue #19): the rows each sync changed, the sync status, and an async sync."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from client_sdk import ClientStatus, HttpTransport, SyncChanges, SyncClient
from tests.conftest import NOTES, Device, Server, create_file
from tests.loopback import free_port
from tests.reliability.inflight import HookedTransport


def write(client: SyncClient, sql: str) -> None:
    with client.connection:
        client.connection.execute(sql)


def test_on_change_tells_which_rows_a_sync_inserted_updated_and_deleted(server: Server, device: Device) -> None:
    url = server()
    phone, laptop = device("phone", url), device("laptop", url)
    heard: list[tuple[SyncChanges, str]] = []
    unsubscribe = laptop.on_change(lambda changes: heard.append((changes, threading.current_thread().name)))
    write(phone, "INSERT INTO notes (id, body) VALUES ('a', 'x'), ('b', 'y')")
    phone.sync()
    laptop.sync()
    assert heard == [(SyncChanges(inserted={"notes": ["a", "b"]}), threading.current_thread().name)]
    write(phone, "UPDATE notes SET body = 'edited' WHERE id = 'a'")
    write(phone, "DELETE FROM notes WHERE id = 'b'")
    phone.sync()
    laptop.sync()
    assert heard[-1][0] == SyncChanges(updated={"notes": ["a"]}, deleted={"notes": ["b"]})
    assert heard[-1][0].tables == {"notes"}
    laptop.sync()  # nothing changed: no call
    write(laptop, "INSERT INTO notes (id, body) VALUES ('mine', 'z')")
    laptop.sync()  # a push changes no local row: no call
    assert len(heard) == 2
    unsubscribe()
    write(phone, "INSERT INTO notes (id, body) VALUES ('c', 'w')")
    phone.sync()
    laptop.sync()
    assert len(heard) == 2


def test_on_change_hears_the_auto_sync_on_its_thread(server: Server, device: Device) -> None:
    url = server()
    phone, laptop = device("phone", url), device("laptop", url)
    arrived = threading.Event()
    heard: list[tuple[SyncChanges, str]] = []

    def listen(changes: SyncChanges) -> None:
        heard.append((changes, threading.current_thread().name))
        arrived.set()

    laptop.on_change(listen)
    laptop.start_auto_sync(interval=0.2, poll=0.05)
    try:
        write(phone, "INSERT INTO notes (id, body) VALUES ('a', 'x')")
        phone.sync()
        assert arrived.wait(30), "the auto sync never reported the new row"
    finally:
        laptop.stop_auto_sync()
    assert heard[0][0] == SyncChanges(inserted={"notes": ["a"]})
    assert heard[0][1] != threading.current_thread().name


def test_status_says_online_syncing_pending_and_the_last_sync(tmp_path: Path, server: Server, device: Device) -> None:
    laptop = device("laptop", server())
    first = laptop.status()
    assert first == ClientStatus(online=None, syncing=False, pending=0, last_sync=None, quarantined=0, held_back=0)
    heard: list[ClientStatus] = []
    laptop.on_status(heard.append)
    write(laptop, "INSERT INTO notes (id, body) VALUES ('a', 'x')")
    assert laptop.status().pending == 1
    laptop.sync()
    assert [(status.syncing, status.pending) for status in heard] == [(True, 1), (False, 0)]
    assert heard[-1].online is True and heard[-1].last_sync is not None and heard[-1].last_sync.ok
    # the server goes away: the next sync fails, and the status says offline
    path = create_file(tmp_path / "away.db")
    away = SyncClient(path, models=NOTES, node_id="away",
                      transport=HttpTransport(f"http://127.0.0.1:{free_port()}/sync/", retries=0, timeout=2.0))
    with away:
        statuses: list[ClientStatus] = []
        away.on_status(statuses.append)
        write(away, "INSERT INTO notes (id, body) VALUES ('b', 'y')")
        try:
            away.sync()
        except Exception:
            pass
        assert statuses[-1].online is False and not statuses[-1].syncing and statuses[-1].pending == 1
        assert away.status().last_sync is not None and not away.status().last_sync.ok  # type: ignore[union-attr]


def test_sync_async_leaves_the_event_loop_running(server: Server, device: Device, tmp_path: Path) -> None:
    url = server()
    phone = device("phone", url)
    write(phone, "INSERT INTO notes (id, body) VALUES ('a', 'x')")
    phone.sync()
    loop_ran = threading.Event()
    hooked = HookedTransport(HttpTransport(url, retries=0, timeout=10.0))
    # the round waits, on the sync's thread, for a task of the event loop to run: a sync that blocked
    # the loop would wait in vain
    hooked.at_next_exchange("before_send", lambda: loop_ran.wait(30))
    with SyncClient(create_file(tmp_path / "laptop.db"), models=NOTES, node_id="laptop", transport=hooked) as laptop:

        async def main() -> tuple[bool, list[str]]:
            syncing = asyncio.create_task(laptop.sync_async())
            await asyncio.sleep(0)
            loop_ran.set()
            result = await syncing
            return loop_ran.is_set(), result.applied.get("notes.Note", [])

        assert asyncio.run(main()) == (True, ["a"])
