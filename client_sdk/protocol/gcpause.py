"""Holding Python's cyclic garbage collector off while a block builds a large structure that holds no cycle.

Decoding a page of records makes several containers per record (the decoded
objects, the records, their rows), and all of them live on. The collector,
counting them as they are made, would run every few hundred, and each run
walks the young ones again and moves them to older generations, whose own
runs walk them once more: about a tenth of the time of an initial sync went
there, to free nothing. Held off for the block, it runs once after it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """No automatic collection inside the block (unless it was already off: then nothing changes).
    Another thread's block may end first and let the collector run again: only speed depends on it."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
