"""Graph sink: ``ladybug:///path`` (embedded Ladybug, a Kùzu fork; one process at a time) or
``neo4j://`` / ``bolt://`` (the official driver). Both run the same batched ``UNWIND $rows …``
Cypher below, each block of rows in one write transaction; only schema setup differs (Ladybug
needs node/rel tables, Neo4j gets uniqueness constraints).

Graph: ``(Account)-[:PAID {transaction_id, amount, event_time, status, fraud_score}]->(Merchant)``
and ``(Account)-[:USED {first_seen, last_seen}]->(Device)``. There is one PAID relationship per
transaction, only replaced by a newer version of it (also when its account or merchant changed);
USED widens its time range.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import Dataset
from rayapp.sinks.base import BatchOptions, SinkError, StoreSink, StoreSpec, conform, is_repair, split_deleted
from rayapp.sinks import graph_network
from rayapp.sinks.graph_cypher import (  # noqa: F401 (the statements are part of this module's surface)
    MERGE_ACCOUNTS, MERGE_DEVICES, FIND_ACCOUNTS, FIND_DEVICES, PAID_COPY, USED_COPY, MERGE_MERCHANTS, FIND_PAID, DELETE_PAID,
    DELETE_PAID_JOIN,
    CREATE_PAID, MERGE_PAID, FIND_USED, MERGE_USED, FIND_TOMBSTONES, MERGE_TOMBSTONES, DELETE_TOMBSTONES, FIND_ACCOUNT_PAID,
    SET_USED, DELETE_USED, DELETE_ORPHAN_ACCOUNTS, DELETE_ORPHAN_MERCHANTS, DELETE_ORPHAN_DEVICES, SCAN_PAID, SCAN_USED,
    LOCK_ACCOUNTS, LADYBUG_SCHEMA, NEO4J_SCHEMA, INDEXES, COUNTS, COUNT_TOMBSTONES, IDS,
)
from rayapp.sinks.graph_engines import LadybugEngine, Neo4jEngine
from rayapp.sinks.graph_plan import (ACCOUNT_PAID, ENDPOINTS, PAID_HELD, TOMBSTONES_HELD, USED_HELD, GraphRows, exact_used, graph_rows,
                                     newest, not_older_than, plan_paid, plan_used)
from rayapp.sinks.views import HIGHEST, LOWEST, VIEWS
from rayapp.urls import url_path

if TYPE_CHECKING:
    from rayapp.settings import Settings

logger = logging.getLogger(__name__)

def _lock(tx: Any, rows: pa.Table) -> pa.Table:
    """What the graph holds for the block's transaction ids (``PAID_HELD``), read under the locks of
    every account involved where the server takes locks (Neo4j): two writers holding the same
    transaction serialise on its accounts. (FalkorDB runs one write query at a time; there the
    MERGE of ``MERGE_PAID`` keeps a payment single.)"""
    ids = rows["transaction_id"].unique().to_pylist()
    held = tx.table(FIND_PAID, ids, PAID_HELD)
    if not tx.locks:
        return held
    locked: set[str] = set()
    while True:
        wanted = {a for a in pc.unique(pa.chunked_array([rows["account_id"], held["account_id"]], pa.string())).to_pylist() if a is not None}
        if wanted <= locked:
            return held
        tx.run(LOCK_ACCOUNTS, sorted(wanted - locked))
        locked |= wanted
        held = tx.table(FIND_PAID, ids, PAID_HELD)  # re-read: a writer may have moved one before we locked


def write_graph(tx: Any, rows: GraphRows, gone: pa.Table, repair: bool = False) -> None:
    """Every statement for one block, in order (nodes before relationships), on ``tx``: a
    transaction of either backend, with ``run(query, rows)``, ``table(query, rows, schema)``,
    ``records(table)``, ``concurrent`` (whether other writers run beside it: a server) and ``locks``
    (whether it takes write locks: Neo4j).

    ``gone``: tombstones (transaction_id, account_id, device_id, version). A tombstone removes the
    older PAID relationship and is kept (``PaidTombstone``) so that an older version arriving later
    is skipped; ``repair`` first forgets what the graph holds for the block's ids."""
    bulk = getattr(tx, "bulk", False)
    delete_paid = DELETE_PAID_JOIN if getattr(tx, "embedded", False) else DELETE_PAID
    if bulk:  # Ladybug's bulk loader for what is new; merchants are few and may change names
        _copy_new_nodes(tx, "Account", FIND_ACCOUNTS, rows.accounts)
        tx.run(MERGE_MERCHANTS, tx.records(rows.merchants))
        _copy_new_nodes(tx, "Device", FIND_DEVICES, rows.devices)
    else:
        tx.run(MERGE_ACCOUNTS, rows.accounts["id"].to_pylist())
        tx.run(MERGE_MERCHANTS, tx.records(rows.merchants))
        tx.run(MERGE_DEVICES, rows.devices["id"].to_pylist())
    everything = pa.concat_tables([rows.paid.select(["transaction_id", "account_id"]), gone.select(["transaction_id", "account_id"])])
    if everything.num_rows == 0:
        return
    held = PAID_HELD.empty_table() if _holds_none(tx, COUNTS["PAID"]) else _lock(tx, everything)
    ids = everything["transaction_id"].unique()
    removed = [held.slice(0, 0)]
    paid = rows.paid
    if repair:
        tx.run(delete_paid, tx.records(held.select(ENDPOINTS)))
        tx.run(DELETE_TOMBSTONES, ids.to_pylist())
        removed.append(held)
        held = held.slice(0, 0)
    else:
        marks = TOMBSTONES_HELD.empty_table() if _holds_none(tx, COUNT_TOMBSTONES) else tx.table(FIND_TOMBSTONES, ids.to_pylist(), TOMBSTONES_HELD)
        if gone.num_rows:
            latest = newest(gone.select(["transaction_id", "version"]))
            fresh = latest.filter(pc.invert(not_older_than(latest, marks, strictly=False)))
            tx.run(MERGE_TOMBSTONES, tx.records(fresh))
            dead = held.filter(not_older_than(held, latest, strictly=True))  # held versions older than the tombstone
            tx.run(delete_paid, tx.records(dead.select(ENDPOINTS)))
            removed.append(dead)
            held = held.filter(pc.invert(pc.is_in(held["transaction_id"], dead["transaction_id"])))
            marks = pa.concat_tables([marks, fresh.cast(TOMBSTONES_HELD)])
        paid = paid.filter(pc.invert(not_older_than(paid, marks, strictly=False)))  # deleted at a version this new or newer
    if paid.num_rows:
        to_delete, to_create = plan_paid(paid, held)
        tx.run(delete_paid, tx.records(to_delete))
        if bulk:  # the replaced ones are deleted above: every row to create is new to the graph
            tx.copy("PAID", to_create.select(PAID_COPY))
        else:
            tx.run(MERGE_PAID if tx.concurrent else CREATE_PAID, tx.records(to_create))
        removed.append(held.filter(pc.is_in(held["transaction_id"], to_delete["transaction_id"])))
    if rows.used.num_rows:
        held_used = tx.table(FIND_USED, rows.used["account_id"].unique().to_pylist(), USED_HELD)
        changes = plan_used(rows.used, held_used)
        if bulk:  # pairs the graph lacks are COPYed; held pairs whose range widens are merged
            known = pc.is_in(_pair_keys(changes), _pair_keys(held_used))
            tx.copy("USED", changes.filter(pc.invert(known)).select(USED_COPY))
            changes = changes.filter(known)
        tx.run(MERGE_USED, tx.records(changes))
    _after_removals(tx, pa.concat_tables(removed), gone, rows if repair else None)


def _holds_none(tx: Any, count: str) -> bool:
    """Whether a graph with one writer (embedded) holds nothing ``count`` counts: then looking up a
    block's ids in it (a scan of the relationship table per lookup) is skipped. A server with
    concurrent writers is always asked per id, under its locks."""
    return not tx.concurrent and tx.scalar(count) == 0


def _pair_keys(t: pa.Table) -> pa.Array:
    return pc.binary_join_element_wise(t["account_id"], t["device_id"], "\x1f")


def _copy_new_nodes(tx: Any, label: str, find: str, nodes: pa.Table) -> None:
    """COPY the key-only nodes of ``nodes`` (column ``id``) that the graph does not hold yet."""
    if nodes.num_rows == 0:
        return
    held = IDS.empty_table() if _holds_none(tx, COUNTS[label]) else tx.table(find, nodes["id"].to_pylist(), IDS)
    tx.copy(label, nodes.filter(pc.invert(pc.is_in(nodes["id"], held["id"]))))


def _after_removals(tx: Any, removed: pa.Table, gone: pa.Table, repaired: GraphRows | None) -> None:
    """USED ranges of the pairs that lost payments, recomputed exactly, and the accounts, merchants
    and devices left with no relationship removed (with ``repaired``: every pair of its accounts)."""
    pairs = pa.concat_tables([removed.select(["account_id", "device_id"]), gone.select(["account_id", "device_id"]).cast(removed.select(["account_id", "device_id"]).schema)])
    accounts = pairs["account_id"]
    if repaired is not None:
        held_used = tx.table(FIND_USED, repaired.accounts["id"].to_pylist(), USED_HELD).select(["account_id", "device_id"])
        pairs = pa.concat_tables([pairs, held_used, repaired.used.select(["account_id", "device_id"])])
    pairs = pairs.filter(pc.and_(pc.is_valid(pairs["account_id"]), pc.is_valid(pairs["device_id"])))
    if pairs.num_rows:
        paid = tx.table(FIND_ACCOUNT_PAID, pc.unique(pairs["account_id"]).to_pylist(), ACCOUNT_PAID)
        to_set, to_delete = exact_used(pairs, paid)
        tx.run(SET_USED, tx.records(to_set))
        tx.run(DELETE_USED, tx.records(to_delete))
    for query, values in ((DELETE_ORPHAN_ACCOUNTS, accounts), (DELETE_ORPHAN_MERCHANTS, removed["merchant_id"]),
                          (DELETE_ORPHAN_DEVICES, pairs["device_id"])):  # fmt: skip
        ids = [v for v in pc.unique(values).to_pylist() if v is not None]
        tx.run(query, ids)


@dataclass(frozen=True)
class GraphOptions(BatchOptions):
    """Transactions per write transaction, and whether Ladybug bulk-loads what is new."""

    bulk: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, field: str = "graph_batch_rows") -> "GraphOptions":
        url = settings.graph_url.get_secret_value() if settings.graph_url is not None else "ladybug://"
        embedded = urlsplit(url).scheme == "ladybug"
        if embedded and settings.graph_bulk_copy:
            field = "graph_bulk_batch_rows"
        return cls(batch_rows=int(getattr(settings, field)), bulk=settings.graph_bulk_copy)


class GraphSink(StoreSink[GraphOptions]):
    """Accounts, merchants and devices as nodes; payments and device use as relationships."""

    datasets = (Dataset.TRANSACTIONS,)
    _backend: Any = None

    def _open(self) -> Any:
        if self._backend is None:
            if urlsplit(self.url).scheme == "ladybug":
                self._backend = LadybugEngine(url_path(self.url), LADYBUG_SCHEMA, bulk=self.options.bulk)
            else:
                self._backend = Neo4jEngine(self.url, NEO4J_SCHEMA, INDEXES)
        return self._backend

    def on_write_start(self) -> None:
        self._open().setup()

    def write(self, dataset: Dataset, block: pa.Table) -> int:
        if dataset not in self.datasets:
            raise SinkError(f"graph does not take {dataset.value}")
        if self._backend is None:
            self.on_write_start()
        block = conform(dataset, block)
        repair = is_repair(block)
        size = self.options.batch_rows
        for start in range(0, block.num_rows, size):
            live, gone = split_deleted(block.slice(start, size))
            rows = graph_rows(live)
            dead = gone.select(["transaction_id", "account_id", "device_id", "_version"]).rename_columns(
                ["transaction_id", "account_id", "device_id", "version"])
            self._backend.write(lambda tx, rows=rows, dead=dead: write_graph(tx, rows, dead, repair))
        return block.num_rows

    def scan(self, view: str, lo: str, hi: str) -> pa.Table:
        query = {"paid": SCAN_PAID, "used": SCAN_USED}[view]
        # Open ends as nulls: FalkorDB's index range scan finds nothing below a non-BMP bound.
        bounds = {"lo": None if lo == LOWEST else lo, "hi": None if hi == HIGHEST else hi}
        return self._open().table(query, [bounds], VIEWS[view].schema)

    def network(self, account_id: str, depth: int, limit: int) -> dict[str, Any] | None:
        """Read side: the accounts linked to ``account_id`` through shared devices and merchants
        (:func:`rayapp.sinks.graph_network.network`). Ladybug is opened read-only for the call, so a
        writer can take the database between reads.

        Raises:
            SinkError: the graph holds nothing yet, or an embedded graph is being written right now.
        """
        if self._backend is not None or urlsplit(self.url).scheme != "ladybug":
            return graph_network.network(self._open(), account_id, depth, limit)
        if not os.path.exists(url_path(self.url)):
            raise SinkError("the graph holds nothing yet: run `rayapp run publish`")
        try:
            engine = LadybugEngine(url_path(self.url), LADYBUG_SCHEMA, read_only=True)
        except RuntimeError as exc:  # the writer actor holds the database
            raise SinkError(f"the embedded graph is being written; try again shortly ({exc})", transient=True) from None
        try:
            return graph_network.network(engine, account_id, depth, limit)
        finally:
            engine.close()

    def counts(self) -> dict[str, int]:
        backend = self._open()
        return {name: backend.scalar(q) for name, q in COUNTS.items()}

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def example_query(self) -> str:
        q = "MATCH (a:Account)-[p:PAID]->(m:Merchant) WHERE p.fraud_score > 0.9 RETURN a.id, m.name, p.amount, p.fraud_score LIMIT 5"
        if urlsplit(self.url).scheme == "ladybug":
            return f"python -c \"import ladybug as lb; print(lb.Connection(lb.Database('{url_path(self.url)}')).execute('{q}').get_as_df())\""
        return f"cypher-shell -a '{self.display_url}' \"{q}\""


STORE = StoreSpec(
    name="graph", setting="graph_url", schemes=("ladybug", "neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc"),
    embedded_schemes=("ladybug",), default_dir="graph", datasets=GraphSink.datasets, sink=GraphSink, views=("paid", "used"),
    # Transactions per graph write transaction come from RAYAPP_GRAPH_BATCH_ROWS: Ladybug's commit
    # cost grows with the graph, so it takes fewer, larger writes than the other stores.
    options=GraphOptions.from_settings, order=30,
)  # fmt: skip
