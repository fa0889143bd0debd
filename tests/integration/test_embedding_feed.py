"""The vector feed of `publish`: rows embedded as they are read, part by part, each distinct text
once per run and per cache (a text repeated in a later part waits for the earlier part's vector),
parts routed in order with the model's own vectors, memory bounded by what is asked ahead."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from rayapp.catalog import EMBEDDING_CACHE, Dataset
from rayapp.lake import Lake
from rayapp.publish.embedding import VectorFeed

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]


class Collect:
    """The part of the router the feed uses (wants / expect / send / flush), keeping what it is sent."""

    def __init__(self) -> None:
        self.sent: dict[Dataset, list[pa.Table]] = {}
        self.flushed: list[Dataset] = []
        self.expected: dict[Dataset, int] = {}

    def expect(self, dataset: Dataset, rows: int) -> None:
        self.expected[dataset] = self.expected.get(dataset, 0) + rows

    def wants(self, dataset: Dataset) -> bool:
        return dataset in (Dataset.TRANSACTION_VECTORS, Dataset.MERCHANT_VECTORS)

    def send(self, dataset: Dataset, table: pa.Table) -> None:
        assert dataset not in self.flushed, "rows sent after their dataset was flushed"
        self.sent.setdefault(dataset, []).append(table)

    def flush(self, dataset: Dataset) -> None:
        self.flushed.append(dataset)


def _batches() -> list[pa.Table]:
    """Five batches of 20 rows over 30 distinct texts (every text in several batches), some without text."""
    texts = [None if i % 9 == 0 else f"Shop {i % 30} (grocery): {i % 30}.50 USD by pos in US." for i in range(100)]
    return [pa.table({"id": [f"T{i:03d}" for i in range(s, s + 20)], "text": texts[s : s + 20]}) for s in range(0, 100, 20)]


def test_feed_embeds_each_text_once_and_routes_parts_in_order(settings: Any) -> None:
    from rayapp.model_store import load_embedder

    lake = Lake(settings)
    batches = _batches()
    router = Collect()
    feed = VectorFeed(router, lake, "run-1", part_rows=16, ahead=64)  # several parts in flight, texts shared between them
    for batch in batches:
        feed.add(Dataset.TRANSACTION_VECTORS, batch)
    feed.add(Dataset.MERCHANT_VECTORS, pa.table({"id": ["M1"], "text": ["Shop 1 (grocery): 1.50 USD by pos in US."]}))
    # The progress counts every row as soon as it is read, before the model has embedded it.
    assert router.expected == {Dataset.TRANSACTION_VECTORS: 100, Dataset.MERCHANT_VECTORS: 1}
    stats = feed.close()

    rows = pa.concat_tables(router.sent[Dataset.TRANSACTION_VECTORS])
    sent = pa.concat_tables(batches)
    assert rows["id"].to_pylist() == sent["id"].to_pylist() and len(router.sent[Dataset.TRANSACTION_VECTORS]) == 7  # 100 rows in parts of 16
    assert sorted(router.flushed, key=str) == sorted([Dataset.TRANSACTION_VECTORS, Dataset.MERCHANT_VECTORS], key=str)
    distinct = {t for t in sent["text"].to_pylist() if t is not None}
    assert len(distinct) == 30  # rows 0, 9, 18, … have no text; every text i % 30 still occurs in other rows
    assert stats.requested == 1 + sum(t is not None for t in sent["text"].to_pylist())
    assert stats.embedded == len(distinct) == _cache_rows(lake)  # the merchant's text was already asked for
    assert stats.cache_hits == stats.distinct - stats.embedded and stats.distinct > stats.embedded

    model = load_embedder()
    want = dict(zip(sorted(distinct), model.embed(sorted(distinct))))
    for text, vector in zip(rows["text"].to_pylist(), rows["vector"].to_pylist()):
        assert (vector is None) if text is None else np.allclose(vector, want[text], atol=1e-5)
    merchant = router.sent[Dataset.MERCHANT_VECTORS][0].to_pylist()[0]
    assert np.allclose(merchant["vector"], want[merchant["text"]], atol=1e-5)

    again = VectorFeed(Collect(), lake, "run-2", part_rows=16, ahead=12)
    for batch in batches:
        again.add(Dataset.TRANSACTION_VECTORS, batch)
    second = again.close()
    assert second.embedded == 0 and second.cache_hits == second.distinct and _cache_rows(lake) == len(distinct)


def _cache_rows(lake: Lake) -> int:
    return lake.read(EMBEDDING_CACHE).num_rows if lake.exists(EMBEDDING_CACHE) else 0


def test_writes_that_finish_while_the_model_embeds_are_recorded(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`publish` waits on the model for the vector parts; meanwhile the other stores' writes that
    finish are recorded (their progress moves), not left until the end of the run."""
    import ray

    from rayapp.catalog import dataset_schema
    from rayapp.ledger import utcnow
    from rayapp.publish import embedding
    from rayapp.publish.writers import Fanout, start_writers, stop_writers

    monkeypatch.setattr(embedding, "WAIT_SLICE_S", 0.01)
    lake = Lake(settings)
    pools = start_writers(lake, ["clickhouse"], "run-poll")
    try:
        ray.get(pools["clickhouse"][0].counts.remote())  # the writer is up and its tables exist
        fan = Fanout(lake, "run-poll", pools)
        schema = dataset_schema(Dataset.TRANSACTIONS)
        now = utcnow()
        rows = [{"transaction_id": f"T{i}", "account_id": "A", "merchant_id": "M", "event_time": now, "_version": now, "_deleted": False}
                for i in range(3)]  # fmt: skip
        block = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)
        fan.submit("clickhouse", Dataset.TRANSACTIONS, ray.put(block))
        waits: list[int] = []

        def poll() -> None:
            waits.append(1)
            fan.poll()

        feed = VectorFeed(Collect(), lake, "run-poll", part_rows=16, while_waiting=poll)
        for batch in _batches():
            feed.add(Dataset.TRANSACTION_VECTORS, batch)
        feed.close()  # the inline model takes seconds to load: the write lands meanwhile
        assert waits, "the feed never gave the caller its turn while the model worked"
        assert fan.pending["clickhouse"] == [] and fan.tally["clickhouse"].written == {"transactions": 3}  # recorded, no drain
        assert fan.drain()["clickhouse"].written == {"transactions": 3}
    finally:
        stop_writers(pools)
