"""Model dependency graph: parents sync before children (PROTOCOL.md section 10)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..errors import CircularDependencyError, InvalidParameterError, UnknownDependencyError


class DependencyGraph:
    """``DependencyGraph({label: {labels it depends on}})``, validated on construction."""

    def __init__(self, edges: Mapping[str, Iterable[str]]) -> None:
        if not isinstance(edges, Mapping):
            raise InvalidParameterError("DependencyGraph expects a mapping of label -> dependencies")
        self.edges: dict[str, frozenset[str]] = {}
        for label, deps in edges.items():
            if not isinstance(label, str) or not label:
                raise InvalidParameterError(f"model labels must be non-empty strings, got {label!r}")
            self.edges[label] = frozenset(deps)
        for label, deps in sorted(self.edges.items()):
            missing = sorted(dep for dep in deps if dep not in self.edges)
            if missing:
                raise UnknownDependencyError(f"{label} depends on {', '.join(missing)}, which is not in the graph")
        self._order = self._kahn()

    def _kahn(self) -> list[str]:
        placed: list[str] = []
        done: set[str] = set()
        remaining = set(self.edges)
        while remaining:
            ready = [label for label in remaining if self.edges[label] <= done]
            if not ready:
                raise CircularDependencyError(f"dependency cycle among: {', '.join(sorted(remaining))}")
            label = min(ready)
            placed.append(label)
            done.add(label)
            remaining.remove(label)
        return placed

    def dependencies(self, label: str) -> set[str]:
        """The labels ``label`` depends on (a fresh set; empty for a label not in the graph)."""
        return set(self.edges.get(label, ()))

    def known_models(self) -> frozenset[str]:
        """Every label in the graph."""
        return frozenset(self.edges)

    def sync_order(self) -> list[str]:
        """Labels in dependency order; ties broken alphabetically."""
        return list(self._order)

    @property
    def labels(self) -> frozenset[str]:
        """Alias of :meth:`known_models`, as a property."""
        return frozenset(self.edges)

    def __contains__(self, label: object) -> bool:
        return label in self.edges
