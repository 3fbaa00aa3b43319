"""The project's copy of the golden vectors is the shared one, byte for byte."""

from __future__ import annotations

import pytest

from tests.conftest import SHARED_VECTORS, VECTORS


def test_the_project_ships_its_vectors() -> None:
    names = sorted(path.name for path in VECTORS.glob("*.json"))
    assert {"checksum.json", "manifest_validation.json", "dependency_graph.json",
            "reconcile.json", "wire_transcript.json", "reference_quirks.json"} <= set(names)


@pytest.mark.skipif(not SHARED_VECTORS.is_dir(), reason="no ../shared/vectors beside the project to compare with")
def test_the_copy_matches_the_shared_vectors() -> None:
    shared = {path.name: path.read_bytes() for path in SHARED_VECTORS.glob("*.json")}
    ours = {path.name: path.read_bytes() for path in VECTORS.glob("*.json")}
    assert sorted(ours) == sorted(shared), "tests/vectors must hold exactly the files of ../shared/vectors"
    differing = [name for name in shared if ours[name] != shared[name]]
    assert not differing, f"tests/vectors differ from ../shared/vectors: {differing}; copy them over"
