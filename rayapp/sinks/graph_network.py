"""Read side of the graph store: the accounts around one account (the fraud-ring view).

Two accounts are linked when they used the same device or paid the same merchant. Device links
come first (a shared device is the strong signal); merchant links follow, riskiest first, since a
popular merchant links nearly everyone. Every account on the way carries its payments' fraud scores.
The same Cypher runs on Ladybug and on a Bolt server.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

ACCOUNT = """UNWIND $rows AS id MATCH (a:Account {id: id}) RETURN a.id AS account_id"""
DEVICE_LINKS = """UNWIND $rows AS id
MATCH (a:Account {id: id})-[:USED]->(d:Device)<-[:USED]-(b:Account)
WHERE b.id <> id
RETURN id AS source, b.id AS target, d.id AS via, 0.0 AS score"""
MERCHANT_LINKS = """UNWIND $rows AS id
MATCH (a:Account {id: id})-[p:PAID]->(m:Merchant)<-[q:PAID]-(b:Account)
WHERE b.id <> id
RETURN id AS source, b.id AS target, m.id AS via, max(q.fraud_score) AS score"""
ACCOUNT_SCORES = """UNWIND $rows AS id
MATCH (a:Account {id: id})-[p:PAID]->(m:Merchant)
RETURN id AS account_id, count(p) AS payments, max(p.fraud_score) AS max_fraud_score, avg(p.fraud_score) AS mean_fraud_score"""

_IDS = pa.schema([pa.field("account_id", pa.string())])
_LINKS = pa.schema([pa.field("source", pa.string()), pa.field("target", pa.string()), pa.field("via", pa.string()),
                    pa.field("score", pa.float64())])  # fmt: skip
_SCORES = pa.schema([pa.field("account_id", pa.string()), pa.field("payments", pa.int64()), pa.field("max_fraud_score", pa.float64()),
                     pa.field("mean_fraud_score", pa.float64())])  # fmt: skip


def network(engine: Any, account_id: str, depth: int, limit: int) -> dict[str, Any] | None:
    """Accounts within ``depth`` hops of ``account_id`` and the links between them (at most
    ``limit`` links); None when the graph has no such account.

    Args:
        engine: a graph engine (:mod:`rayapp.sinks.graph_engines`) with ``table(query, rows, schema)``.
    """
    if engine.table(ACCOUNT, [account_id], _IDS).num_rows == 0:
        return None
    hops = {account_id: 0}
    links: list[dict[str, Any]] = []
    seen_pairs: set[tuple[str, str, str, str]] = set()
    frontier = [account_id]
    truncated = False
    for hop in range(1, depth + 1):
        found = []
        for kind, query in (("device", DEVICE_LINKS), ("merchant", MERCHANT_LINKS)):
            rows = engine.table(query, frontier, _LINKS).to_pylist()
            found += [{**r, "kind": kind} for r in sorted(rows, key=lambda r: (-(r["score"] or 0.0), r["target"], r["via"]))]
        following: list[str] = []
        for link in found:
            a, b = sorted((link["source"], link["target"]))
            pair = (a, b, link["kind"], link["via"])
            if pair in seen_pairs:
                continue
            if len(links) >= limit:
                truncated = True
                break
            seen_pairs.add(pair)
            links.append({"source": link["source"], "target": link["target"], "kind": link["kind"], "via": link["via"],
                          **({"max_fraud_score": link["score"]} if link["kind"] == "merchant" else {})})  # fmt: skip
            if link["target"] not in hops:
                hops[link["target"]] = hop
                following.append(link["target"])
        frontier = following
        if truncated or not frontier:
            break
    scores = {r["account_id"]: r for r in engine.table(ACCOUNT_SCORES, list(hops), _SCORES).to_pylist()}
    accounts = [{"account_id": a, "depth": d, "payments": scores.get(a, {}).get("payments", 0),
                 "max_fraud_score": scores.get(a, {}).get("max_fraud_score"), "mean_fraud_score": scores.get(a, {}).get("mean_fraud_score")}
                for a, d in sorted(hops.items(), key=lambda kv: (kv[1], kv[0]))]  # fmt: skip
    return {"account_id": account_id, "depth": depth, "accounts": accounts, "links": links, "truncated": truncated}
