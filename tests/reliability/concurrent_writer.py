"""A second process writing to a device's file while it syncs (``test_concurrent_writer.py``).

``python -m tests.reliability.concurrent_writer DB SECONDS SEED KEYS OUT`` writes for SECONDS
with a mix of INSERT OR REPLACE, UPSERT, UPDATE, DELETE and re-inserts of deleted keys, each
committed on its own, and then writes its own record of every key's final row to OUT as JSON.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import time


def main(path: str, seconds: float, seed: int, keys: int, out: str) -> None:
    rng = random.Random(seed)
    state: dict[str, list[object]] = {}
    connection = sqlite3.connect(path, timeout=60, isolation_level=None)
    deadline = time.monotonic() + seconds
    written = 0
    while time.monotonic() < deadline:
        key = f"k{rng.randrange(keys)}"
        row = [f"w{written}", rng.randrange(2)]
        roll = rng.random()
        if roll < 0.1:
            connection.execute("DELETE FROM notes WHERE id = ?", (key,))
            state.pop(key, None)
        elif roll < 0.35:
            connection.execute("INSERT OR REPLACE INTO notes (id, body, pinned) VALUES (?, ?, ?)", (key, *row))
            state[key] = row
        elif roll < 0.6:
            connection.execute("INSERT INTO notes (id, body, pinned) VALUES (?, ?, ?) "
                               "ON CONFLICT (id) DO UPDATE SET body = excluded.body, pinned = excluded.pinned", (key, *row))
            state[key] = row
        elif roll < 0.8:
            connection.execute("UPDATE notes SET body = ?, pinned = ? WHERE id = ?", (*row, key))
            if key in state:
                state[key] = row
        else:  # a key deleted before comes back; a live one is left as it is
            connection.execute("INSERT OR IGNORE INTO notes (id, body, pinned) VALUES (?, ?, ?)", (key, *row))
            state.setdefault(key, row)
        written += 1
    connection.close()
    with open(out, "w", encoding="utf-8") as handle:
        json.dump({"writes": written, "rows": state}, handle)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
