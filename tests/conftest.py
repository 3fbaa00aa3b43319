"""Shared fixtures: where the golden vectors live."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

VECTORS = Path(os.environ.get("SYNC_VECTORS", Path(__file__).resolve().parents[2] / "shared" / "vectors"))


def load_vectors(name: str) -> list[dict[str, Any]]:
    path = VECTORS / name
    if not path.exists():
        pytest.fail(f"golden vectors not found at {path} (set SYNC_VECTORS to the shared/vectors folder)")
    return json.loads(path.read_text())
