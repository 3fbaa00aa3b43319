"""Shared fixtures: where the golden vectors live.

The project ships its own copy of the golden vectors in ``tests/vectors`` so that
a clone of it alone runs the whole suite. ``tests/protocol/test_vectors_copy.py``
checks that copy against the team's ``../shared/vectors`` whenever that folder
exists next to the project; ``tests/seed`` and ``../shared/seed`` (the API page
the public API must match) are checked the same way.

Hypothesis runs without its timing checks (a deadline per example, a health
check on slow data generation): on a loaded two-core machine they fail at random,
and the suite makes no timing assertions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

settings.register_profile("untimed", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("untimed")

VECTORS = Path(__file__).resolve().parent / "vectors"
SHARED_VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
SEED = Path(__file__).resolve().parent / "seed"
"""The project's copy of the seed's API page(s) (``../shared/seed``), read by ``protocol/test_seed_api.py``."""
SHARED_SEED = Path(__file__).resolve().parents[2] / "shared" / "seed"


def load_vectors(name: str) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return loaded
