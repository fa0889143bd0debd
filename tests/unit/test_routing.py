"""Publish routing: each dataset reaches exactly the stores that declare it, in each store's batch size."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from rayapp.catalog import Dataset
from rayapp.publish.routing import Router
from rayapp.sinks import select


class RecordingFan:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Dataset, Any]] = []
        self.rows: list[int] = []
        self.expected: dict[str, int] = {}

    def expect(self, store: str, rows: int) -> None:
        self.expected[store] = self.expected.get(store, 0) + rows

    def submit(self, store: str, dataset: Dataset, ref: Any, tag: Any = None, rows: int = 0) -> None:
        self.rows.append(rows)  # what the progress display counts
        self.sent.append((store, dataset, ref))


def _rows(n: int, start: int = 0) -> pa.Table:
    return pa.table({"transaction_id": [f"T{i}" for i in range(start, start + n)]})


def test_router_sends_by_declared_datasets_and_batch_sizes() -> None:
    fan = RecordingFan()
    puts: list[pa.Table] = []

    def put(t: pa.Table) -> int:
        puts.append(t)
        return len(puts) - 1

    router = Router(fan, select(None), {"postgres": 3, "clickhouse": 3, "graph": 5, "vector": 3}, put=put)  # type: ignore[arg-type]
    assert router.wants(Dataset.TRANSACTIONS) and router.wants(Dataset.MERCHANT_VECTORS)
    router.send(Dataset.TRANSACTIONS, _rows(4))
    router.send(Dataset.TRANSACTIONS, _rows(3, start=4))
    router.flush(Dataset.TRANSACTIONS)
    router.send(Dataset.DAILY_ACCOUNT_ACTIVITY, _rows(2))
    router.flush()

    by_store: dict[str, list[list[str]]] = {}
    for store, dataset, ref in fan.sent:
        by_store.setdefault(f"{store}:{dataset.value}", []).append(puts[ref]["transaction_id"].to_pylist())
    ids = [f"T{i}" for i in range(7)]
    # The SQL stores share one object per batch of 3; the graph gathers 5 before it writes.
    assert by_store["postgres:transactions"] == by_store["clickhouse:transactions"] == [ids[0:3], ids[3:6], ids[6:7]]
    assert by_store["graph:transactions"] == [ids[0:5], ids[5:7]]
    assert by_store["postgres:daily_account_activity"] == by_store["clickhouse:daily_account_activity"] == [["T0", "T1"]]
    assert not any(k.startswith("vector:") for k in by_store)  # the vector store declares no row dataset
    assert not any(k.startswith("graph:daily") for k in by_store)
    shared = [ref for store, d, ref in fan.sent if store == "postgres"]
    assert shared == [ref for store, d, ref in fan.sent if store == "clickhouse"]  # same objects, not copies
    assert sum(t.num_rows for t in puts) == 7 + 7 + 2  # one copy for the SQL stores, one for the graph, gold once
    assert fan.rows == [puts[ref].num_rows for _, _, ref in fan.sent]  # each store's submission counts its rows


def test_router_for_one_store_sends_nothing_else() -> None:
    fan = RecordingFan()
    router = Router(fan, select(["graph"]), {"graph": 2}, put=lambda t: t)  # type: ignore[arg-type]
    assert not router.wants(Dataset.PREDICTIONS) and not router.wants(Dataset.TRANSACTION_VECTORS)
    router.send(Dataset.PREDICTIONS, _rows(5))
    router.send(Dataset.TRANSACTIONS, _rows(3))
    router.flush()
    assert [(s, d, t.num_rows) for s, d, t in fan.sent] == [("graph", Dataset.TRANSACTIONS, 2), ("graph", Dataset.TRANSACTIONS, 1)]


def test_rows_announced_ahead_count_for_the_stores_that_take_them() -> None:
    fan = RecordingFan()
    router = Router(fan, select(None), {"postgres": 3, "clickhouse": 3, "graph": 5, "vector": 3}, put=lambda t: t)  # type: ignore[arg-type]
    router.expect(Dataset.TRANSACTION_VECTORS, 10)
    router.expect(Dataset.MERCHANT_VECTORS, 2)
    assert fan.expected == {"vector": 12} and not fan.sent
    router.expect(Dataset.TRANSACTIONS, 5)
    assert fan.expected == {"vector": 12, "postgres": 5, "clickhouse": 5, "graph": 5}


def test_fanout_counts_rows_announced_ahead_once() -> None:
    from types import SimpleNamespace

    from rayapp.progress import Progress
    from rayapp.publish.writers import Fanout

    class Handle:  # the part of an actor handle Fanout.submit calls
        def __init__(self) -> None:
            self.write = SimpleNamespace(remote=lambda *args: object())

    progress = Progress("publish", ["vector"], terminal=False)
    lake = SimpleNamespace(settings=SimpleNamespace(writer_max_in_flight=8))
    fan = Fanout(lake, "run-1", {"vector": [Handle()]}, progress=progress)  # type: ignore[arg-type]
    fan.expect("vector", 10)
    assert progress.counts["vector"].total == 10
    fan.submit("vector", Dataset.TRANSACTION_VECTORS, "ref-1", rows=4)
    fan.submit("vector", Dataset.TRANSACTION_VECTORS, "ref-2", rows=6)
    assert progress.counts["vector"].total == 10  # announced, then submitted: counted once
    fan.submit("vector", Dataset.MERCHANT_VECTORS, "ref-3", rows=2)
    assert progress.counts["vector"].total == 12  # beyond what was announced: the total follows
    progress.close()
