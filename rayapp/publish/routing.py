"""Routing: each batch of a dataset goes to every chosen store whose plug-in declares that
dataset, in that store's batch size; stores with the same batch size share one object."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pyarrow as pa

from rayapp.catalog import Dataset
from rayapp.publish.writers import Fanout
from rayapp.sinks.base import StoreSpec


def slices(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)


class Coalesce:
    """Regroups a stream of batches into tables of exactly ``rows`` rows (the last one may be shorter)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.parts: list[pa.Table] = []
        self.held = 0

    def add(self, batch: pa.Table) -> list[pa.Table]:
        """The full tables ``batch`` completes (none while fewer than ``rows`` rows are held)."""
        self.parts.append(batch)
        self.held += batch.num_rows
        if self.held < self.rows:
            return []
        whole = self.flush()
        assert whole is not None
        full = (whole.num_rows // self.rows) * self.rows
        if full < whole.num_rows:
            rest = whole.slice(full)
            self.parts, self.held = [rest], rest.num_rows
        return [whole.slice(start, self.rows) for start in range(0, full, self.rows)]

    def flush(self) -> pa.Table | None:
        if not self.parts:
            return None
        # by column name: live rows and tombstones of a dataset come from different readers
        out = pa.concat_tables(self.parts, promote_options="permissive") if len(self.parts) > 1 else self.parts[0]
        self.parts, self.held = [], 0
        return out


class Router:
    """Sends dataset batches to the stores that take them (see the module docstring)."""

    def __init__(self, fan: Fanout, specs: list[StoreSpec[Any]], batch_rows: dict[str, int],
                 put: Callable[[pa.Table], Any] | None = None) -> None:  # fmt: skip
        self.fan = fan
        self.put = put
        self.groups: dict[Dataset, list[tuple[list[str], Coalesce]]] = {}
        for dataset in Dataset:
            by_size: dict[int, list[str]] = {}
            for spec in specs:
                if spec.takes(dataset):
                    by_size.setdefault(batch_rows[spec.name], []).append(spec.name)
            self.groups[dataset] = [(names, Coalesce(rows)) for rows, names in sorted(by_size.items())]

    def wants(self, dataset: Dataset) -> bool:
        return bool(self.groups[dataset])

    def expect(self, dataset: Dataset, rows: int) -> None:
        """Rows of ``dataset`` that will be sent later (vectors, while the model embeds them): the
        progress totals of the stores that take it include them from now on."""
        for names, _ in self.groups[dataset]:
            for name in names:
                self.fan.expect(name, rows)

    def send(self, dataset: Dataset, table: pa.Table) -> None:
        for names, buf in self.groups[dataset]:
            for block in buf.add(table):
                self._submit(dataset, names, block)

    def flush(self, dataset: Dataset | None = None) -> None:
        """Send what is held (of one dataset, or all): call when a dataset's stream ends."""
        for ds, groups in self.groups.items():
            if dataset is not None and ds != dataset:
                continue
            for names, buf in groups:
                if (block := buf.flush()) is not None:
                    self._submit(ds, names, block)

    def done(self, dataset: Dataset) -> None:
        """``dataset``'s stream has ended: send what is held, and let each store end what its
        writes of it left open once they are written (see ``Fanout.finish_when_written``)."""
        self.flush(dataset)
        for names, _ in self.groups[dataset]:
            for name in names:
                self.fan.finish_when_written(name, dataset)

    def _submit(self, dataset: Dataset, names: list[str], block: pa.Table) -> None:
        if self.put is None:
            import ray

            self.put = ray.put
        ref = self.put(block)
        for name in names:
            self.fan.submit(name, dataset, ref, rows=block.num_rows)
