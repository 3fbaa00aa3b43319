"""Finding the FOREIGN KEYs a sync round left pointing at nothing, reading as little as it can."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping
from operator import itemgetter
from typing import Any

from ..engine.protocols import ReferenceViolation
from .ddl import S_KEY, S_PENDING
from .mapping import IN_KEYS, PlainRows, TableMapping, keys_json
from .schema import ForeignKey, quote


class ReferenceChecks:
    """Checks the references of the rows a round wrote or deleted, inside its transaction (foreign
    keys are deferred while sync applies a page). Pages tell it, as they are written, which values
    they bound to text FOREIGN KEY columns (:meth:`note`), so that a page whose parents all exist
    needs no row read back."""

    def __init__(self, connection: sqlite3.Connection, identity_field: str, models: Mapping[str, TableMapping],
                 labels_by_table: Mapping[str, str]) -> None:
        self.connection = connection
        self.identity_field = identity_field
        self._models = models
        self._labels_by_table = labels_by_table
        self._bound: dict[tuple[str, ForeignKey], set[Any] | None] = {}
        """(label, text FOREIGN KEY) -> the values writes bound to its column since :meth:`violations`
        last looked; None once a write bound it row by row."""

    def violations(
        self, written: Mapping[str, Collection[str]], deleted: Mapping[str, Collection[str]]
    ) -> list[ReferenceViolation]:
        """Rows of tracked tables whose FOREIGN KEY points at nothing after a round wrote the rows
        ``written`` and deleted the rows ``deleted`` (label -> keys), inside the current transaction
        (foreign keys are deferred while sync applies a page): (label, key, parent label, parent key).

        Only what the round can have broken is read: the written rows' references, and the rows
        referring to deleted ones. Written rows are read back only if a value they bound to the
        key is missing from its parent table (the distinct values, a few per page, are looked up
        first). A constraint on other columns than the parent's key is checked over the whole
        table, with ``PRAGMA foreign_key_check``.
        """
        found = []
        whole_tables = set()
        bound_references, self._bound = self._bound, {}
        for label, model in self._models.items():
            children = written.get(label, ())
            for fk in model.schema.foreign_keys:
                parent_label = self._labels_by_table.get(fk.parent)
                parent_key = self._models[parent_label].tracked.key if parent_label else None
                by_key = parent_key is not None and fk.parent_columns in ((None,), (parent_key,))
                column = parent_key if by_key else fk.parent_columns[0]
                single = len(fk.columns) == 1 and column is not None
                gone = deleted.get(parent_label, ()) if parent_label else ()
                bound = bound_references.get((label, fk))
                if single and column is not None and children and not (
                    by_key and bound is not None and self._all_present(fk, column, bound)
                ):
                    found += self._dangling(model, fk, column, f"c.{model.tracked.key_column} IN {IN_KEYS}", children)
                if by_key and column is not None and gone:
                    found += self._dangling(model, fk, column, f"c.{quote(fk.columns[0])} IN {IN_KEYS}", gone)
                parent_changed = bool(gone or (parent_label and written.get(parent_label)))
                if (not single and children) or (not by_key and parent_changed):
                    whole_tables.add(model.tracked.table)  # the values it referred to are gone: look everywhere
        for table in sorted(whole_tables):
            found += self._table_violations(table)
        return list(dict.fromkeys(found))

    def referrers(self, label: str, keys: Collection[str], *, pending: bool) -> list[ReferenceViolation]:
        """Rows of tracked tables whose FOREIGN KEY names one of the stored rows ``keys`` of ``label``
        (read before they are deleted), only those with a pending local change if ``pending``:
        (label, key, parent label, parent key). Pending rows are read through the partial index that
        holds them, so finding none costs next to nothing."""
        parent = self._models[label].tracked
        found = []
        for child_label, model in self._models.items():
            child = model.tracked
            for fk in model.schema.foreign_keys:
                if self._labels_by_table.get(fk.parent) != label or (None in fk.parent_columns and len(fk.columns) > 1):
                    continue
                columns = ", ".join(f"c.{quote(column)}" for column in fk.columns)
                named = ", ".join(f"p.{quote(column or parent.key)}" for column in fk.parent_columns)
                # pending rows first (the partial index holds only them); else from the parents named
                source = (f"{child.shadow} AS s CROSS JOIN {child.base} AS c ON c.{child.key_column} = s.{S_KEY} "
                          f"CROSS JOIN {parent.base} AS p ON ({named}) = ({columns}) WHERE s.{S_PENDING} = 1 AND"
                          if pending else f"{parent.base} AS p JOIN {child.base} AS c ON ({columns}) = ({named}) WHERE")
                rows = self.connection.execute(
                    f"SELECT c.{child.key_column}, p.{parent.key_column} FROM {source} p.{parent.key_column} IN {IN_KEYS} "
                    "ORDER BY 1",
                    (keys_json(keys),),
                )
                found += [ReferenceViolation(child_label, key, label, parent_key) for key, parent_key in rows]
        return found

    def _all_present(self, fk: ForeignKey, parent_column: str, values: set[Any]) -> bool:
        """Every one of ``values`` (text, or NULL) names a row of ``fk``'s parent table."""
        if not set(map(type, values)) <= {str, type(None)}:
            return False
        texts = [value for value in values if value is not None]
        if not texts:
            return True
        parent = f"SELECT 1 FROM {quote(fk.parent)} AS p WHERE p.{quote(parent_column)} = value"
        row = self.connection.execute(f"SELECT NOT EXISTS (SELECT 1 FROM json_each(?) WHERE NOT EXISTS ({parent}))",
                                      (json.dumps(texts),)).fetchone()
        return bool(row[0])

    def _dangling(
        self, model: TableMapping, fk: ForeignKey, parent_column: str, where: str, keys: Collection[str]
    ) -> list[ReferenceViolation]:
        """Rows of ``model`` selected by ``where`` (bound to ``keys``) whose single-column ``fk`` names no row."""
        tracked = model.tracked
        reference = f"c.{quote(fk.columns[0])}"
        rows = self.connection.execute(
            f"SELECT c.{tracked.key_column}, {reference} FROM {tracked.base} AS c WHERE {where} AND {reference} IS NOT NULL "
            f"AND NOT EXISTS (SELECT 1 FROM {quote(fk.parent)} AS p WHERE p.{quote(parent_column)} = {reference}) "
            f"ORDER BY 1",
            (keys_json(keys),),
        )
        parent_label = self._labels_by_table.get(fk.parent)
        return [ReferenceViolation(tracked.label, key, parent_label, parent_key) for key, parent_key in rows]

    def _table_violations(self, table: str) -> list[ReferenceViolation]:
        found = []
        for _, rowid, parent, fkid in self.connection.execute("PRAGMA foreign_key_check(" + quote(table) + ")").fetchall():
            if rowid is None:
                continue
            column = self.connection.execute(
                'SELECT "from" FROM pragma_foreign_key_list(?) WHERE "id" = ?', (table, fkid)
            ).fetchone()[0]
            key, parent_key = self.connection.execute(
                f"SELECT {quote(self.identity_field)}, {quote(column)} FROM {quote(table)} WHERE rowid = ?", (rowid,)
            ).fetchone()
            found.append(ReferenceViolation(self._labels_by_table[table], key, self._labels_by_table.get(parent), parent_key))
        return found

    def note(self, model: TableMapping, plain: PlainRows | None) -> None:
        """Remember what a page bound to its text FOREIGN KEY columns, for :meth:`reference_violations`.
        (Rows bound one by one, with converted values, are not followed: they are read back.)"""
        for fk in model.text_references:
            slot = (model.tracked.label, fk)
            values = self._bound.setdefault(slot, set())
            if plain is None:
                self._bound[slot] = None
            elif values is not None:
                names, rows = plain
                values.update(map(itemgetter(list(names).index(fk.columns[0])), rows))
