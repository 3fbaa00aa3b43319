"""A device process that syncs and kills itself with SIGKILL at a chosen point of the sync.

``python -m tests.reliability.crash_device DB URL POINT NODE_ID`` where POINT is one of
``POINTS``. The process dies for real (no cleanup, no atexit, no rollback
from Python): only SQLite's own journal stands between the kill and the file.
"""

from __future__ import annotations

import os
import signal
import sys

from client_sdk import HttpTransport, SyncClient, SyncPhase
from tests.reliability.world import MODELS

POINTS = ("collect", "sent", "applying", "before_checkpoint", "after_checkpoint")


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(db: str, url: str, point: str, node_id: str) -> int:
    saved = False

    def on_phase(phase: SyncPhase) -> None:
        if point == "collect" and phase is SyncPhase.COLLECTING:
            die()
        if point == "after_checkpoint" and saved and phase in (SyncPhase.COLLECTING, SyncPhase.COMPLETE):
            die()

    client = SyncClient(db, models=MODELS, node_id=node_id, transport=HttpTransport(url, retries=0), on_phase=on_phase)
    storage = client.storage
    exchange, upsert_many, save_checkpoint = client.transport.exchange, storage.upsert_many, storage.save_checkpoint

    def exchange_then_die(manifest):
        response = exchange(manifest)
        if point == "sent":
            die()
        return response

    def upsert_then_die(label, records, **options):
        skipped = upsert_many(label, records, **options)
        if point == "applying" and records:
            die()
        return skipped

    def save_around(checkpoint, after_keys=None):
        nonlocal saved
        if point == "before_checkpoint":
            die()
        save_checkpoint(checkpoint, after_keys)
        saved = True

    client.transport.exchange = exchange_then_die  # type: ignore[method-assign]
    storage.upsert_many = upsert_then_die  # type: ignore[method-assign]
    storage.save_checkpoint = save_around  # type: ignore[method-assign]
    client.sync()
    client.close()
    print("survived")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
