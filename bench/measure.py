"""What the benches read about a process from /proc (Linux): its CPU time and its memory."""

from __future__ import annotations

import os
import resource
from pathlib import Path


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU a process has used so far (None where /proc has none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
