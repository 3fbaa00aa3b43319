"""Real parts for the client tests: commands run as a user runs them (a subprocess from the repository
root). The notes server and devices (``server``, ``device``, ``create_file``, ``rows``) are in
``tests/conftest.py``, where the reliability tests see them too."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy; fail after ``timeout`` seconds (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def run(*args: str, check: bool = True, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``python <args>``, from the repository root unless told otherwise, as a user types it."""
    process = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if check and process.returncode != 0:
        pytest.fail(f"{args} exited {process.returncode}\nstdout:\n{process.stdout}\nstderr:\n{process.stderr}")
    return process
