"""Routing: each batch of a dataset goes to every chosen store whose plug-in declares that
dataset, in that store's batch size; stores with the same batch size share one object."""

from __future__ import annotations

from typing import Any, Iterator

import pyarrow as pa

from rayapp.catalog import Dataset
from rayapp.publish.writers import Fanout
from rayapp.sinks.base import StoreSpec


def slices(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)


class Coalesce:
    """Gathers batches into tables of at least ``rows`` rows (the graph takes larger writes)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.parts: list[pa.Table] = []
        self.held = 0

    def add(self, batch: pa.Table) -> pa.Table | None:
        self.parts.append(batch)
        self.held += batch.num_rows
        return self.flush() if self.held >= self.rows else None

    def flush(self) -> pa.Table | None:
        if not self.parts:
            return None
        out = pa.concat_tables(self.parts) if len(self.parts) > 1 else self.parts[0]
        self.parts, self.held = [], 0
        return out


class Router:
    """Sends dataset batches to the stores that take them (see the module docstring)."""

    def __init__(self, fan: Fanout, specs: list[StoreSpec[Any]], batch_rows: dict[str, int]) -> None:
        self.fan = fan
        self.groups: dict[Dataset, list[tuple[list[str], Coalesce]]] = {}
        for dataset in Dataset:
            by_size: dict[int, list[str]] = {}
            for spec in specs:
                if spec.takes(dataset):
                    by_size.setdefault(batch_rows[spec.name], []).append(spec.name)
            self.groups[dataset] = [(names, Coalesce(rows)) for rows, names in sorted(by_size.items())]

    def wants(self, dataset: Dataset) -> bool:
        return bool(self.groups[dataset])

    def send(self, dataset: Dataset, table: pa.Table) -> None:
        for names, buf in self.groups[dataset]:
            for part in slices(table, buf.rows):
                if (block := buf.add(part)) is not None:
                    self._submit(dataset, names, block)

    def flush(self, dataset: Dataset | None = None) -> None:
        """Send what is held (of one dataset, or all): call when a dataset's stream ends."""
        for ds, groups in self.groups.items():
            if dataset is not None and ds != dataset:
                continue
            for names, buf in groups:
                if (block := buf.flush()) is not None:
                    self._submit(ds, names, block)

    def _submit(self, dataset: Dataset, names: list[str], block: pa.Table) -> None:
        import ray

        ref = ray.put(block)
        for name in names:
            self.fan.submit(name, dataset, ref)
