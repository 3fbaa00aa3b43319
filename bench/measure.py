"""What the benches read about a process from /proc (Linux), its CPU time and its memory, and a way
to run a phase in a process of its own so that what it reports is its own."""

from __future__ import annotations

import multiprocessing
import os
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU a process has used so far (None where /proc has none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU a process and all its descendants have used so far, the descendants that exited
    (and were waited for) included: a server's, whose work is spread over child processes (uvicorn's
    workers, PostgreSQL's backends). 0 where /proc has none of it."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    total, family = 0.0, [pid]
    while family:
        member = family.pop()
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(fields[index]) for index in (11, 12, 13, 14)) / os.sysconf("SC_CLK_TCK")  # own, waited-for children's
        family += [child for child, parent in parents.items() if parent == member]
    return total


def proc_status_mb(pid: int, field: str) -> float | None:
    """A memory line of /proc/<pid>/status (``VmHWM``: peak RSS, ``VmRSS``: now) in MB; None where there is none."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ``ru_maxrss``: Linux carries ``ru_maxrss`` over ``exec``, so a
    spawned child's would start at its parent's peak (a bench's, after seeding); VmHWM starts afresh."""
    peak = proc_status_mb(os.getpid(), "VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(connection: Any, phase: Callable[..., dict[str, Any]], *args: Any) -> None:
    connection.send(phase(*args))
    connection.close()


def in_child(phase: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run a client phase in a fresh interpreter, so the memory it reports is its own."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sender, phase, *args))
    child.start()
    sender.close()
    try:
        report: dict[str, Any] = receiver.recv()
        return report
    except EOFError:
        raise SystemExit(f"the client process of {phase.__name__} failed (see above)") from None
    finally:
        child.join()
