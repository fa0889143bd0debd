"""The graph sink's Cypher, one constant per statement, and each engine's schema: the same
statements drive embedded Ladybug and a Bolt server (see :mod:`rayapp.sinks.graph`)."""

from __future__ import annotations

import pyarrow as pa

# Key-only nodes take a list of ids: Ladybug looks a MERGE key up in its primary-key index when
# it is a plain value, but scans when it is a struct field (`r.id`), ~40x slower at 40k nodes.
MERGE_ACCOUNTS = "UNWIND $rows AS id MERGE (a:Account {id: id})"
MERGE_DEVICES = "UNWIND $rows AS id MERGE (d:Device {id: id})"
# The bulk path (Ladybug): nodes the graph lacks are COPYed in; these say which it holds.
FIND_ACCOUNTS = "UNWIND $rows AS id MATCH (a:Account {id: id}) RETURN a.id AS id"
FIND_DEVICES = "UNWIND $rows AS id MATCH (d:Device {id: id}) RETURN d.id AS id"
#: Property order of the relationship tables (COPY takes columns by position after the endpoints).
PAID_COPY = ["account_id", "merchant_id", "transaction_id", "amount", "event_time", "status", "fraud_score", "version", "device_id"]
USED_COPY = ["account_id", "device_id", "first_seen", "last_seen"]
IDS = pa.schema([("id", pa.string())])
MERGE_MERCHANTS = "UNWIND $rows AS r MERGE (m:Merchant {id: r.id}) SET m.name = r.name, m.category = r.category"
# A payment is keyed by its transaction id wherever it hangs: FIND_PAID returns what the graph holds
# for a batch's ids, `plan_paid` decides which rows are new or newer (or moved to other endpoints),
# and those go through DELETE_PAID (the rels they replace) and CREATE_PAID. Equal or older versions
# are skipped, so a re-run writes nothing. (A `MERGE … SET` of the five properties measured 1.5–2.5x
# the cost on Ladybug: setting properties on a relationship is its slowest write.)
# Separate MATCH clauses (not `MATCH (a), (m)`): Ladybug plans the comma form as a cross product.
FIND_PAID = """UNWIND $rows AS id
MATCH (a:Account)-[p:PAID {transaction_id: id}]->(m:Merchant)
RETURN id AS transaction_id, a.id AS account_id, m.id AS merchant_id, p.version AS version, p.device_id AS device_id"""
DELETE_PAID = """UNWIND $rows AS r
MATCH (a:Account {id: r.account_id})-[p:PAID {transaction_id: r.transaction_id}]->(m:Merchant {id: r.merchant_id})
DELETE p"""
# Ladybug plans the anchored form above as a per-row probe (~1.8 ms a row on a 400k-relationship
# graph); as a join on the relationship property with the endpoints filtered after, ~40x faster.
DELETE_PAID_JOIN = """UNWIND $rows AS r
MATCH (a:Account)-[p:PAID]->(m:Merchant)
WHERE p.transaction_id = r.transaction_id AND a.id = r.account_id AND m.id = r.merchant_id
DELETE p"""
CREATE_PAID = """UNWIND $rows AS r
MATCH (a:Account {id: r.account_id})
MATCH (m:Merchant {id: r.merchant_id})
CREATE (a)-[:PAID {transaction_id: r.transaction_id, amount: r.amount, event_time: r.event_time, status: r.status,
                   fraud_score: r.fraud_score, version: r.version, device_id: r.device_id}]->(m)"""
# On a server other writers may create the same payment between our read and our write: there it is
# a MERGE on the relationship pattern (one write query is atomic), properties set after.
MERGE_PAID = """UNWIND $rows AS r
MATCH (a:Account {id: r.account_id})
MATCH (m:Merchant {id: r.merchant_id})
MERGE (a)-[p:PAID {transaction_id: r.transaction_id}]->(m)
SET p.amount = r.amount, p.event_time = r.event_time, p.status = r.status, p.fraud_score = r.fraud_score, p.version = r.version,
    p.device_id = r.device_id"""
# USED keeps MERGE (concurrent writers on Neo4j widen one relationship, never create two), but only
# for pairs that change the graph: FIND_USED returns the ranges held for a batch's accounts and
# `plan_used` drops the rows inside them, which after the first batches is most of them.
FIND_USED = """UNWIND $rows AS id
MATCH (a:Account {id: id})-[u:USED]->(d:Device)
RETURN a.id AS account_id, d.id AS device_id, u.first_seen AS first_seen, u.last_seen AS last_seen"""
MERGE_USED = """UNWIND $rows AS r
MATCH (a:Account {id: r.account_id})
MATCH (d:Device {id: r.device_id})
MERGE (a)-[u:USED]->(d)
ON CREATE SET u.first_seen = r.first_seen, u.last_seen = r.last_seen
ON MATCH SET u.first_seen = CASE WHEN r.first_seen < u.first_seen THEN r.first_seen ELSE u.first_seen END,
             u.last_seen = CASE WHEN r.last_seen > u.last_seen THEN r.last_seen ELSE u.last_seen END"""

# Deletes: a tombstone per deleted transaction (the version it left the lake at); USED ranges of the
# pairs that lost payments recomputed from the PAID relationships left; nodes left alone removed.
FIND_TOMBSTONES = """UNWIND $rows AS id
MATCH (t:PaidTombstone {transaction_id: id})
RETURN t.transaction_id AS transaction_id, t.version AS version"""
MERGE_TOMBSTONES = "UNWIND $rows AS r MERGE (t:PaidTombstone {transaction_id: r.transaction_id}) SET t.version = r.version"
DELETE_TOMBSTONES = "UNWIND $rows AS id MATCH (t:PaidTombstone {transaction_id: id}) DELETE t"
FIND_ACCOUNT_PAID = """UNWIND $rows AS id
MATCH (a:Account {id: id})-[p:PAID]->(m:Merchant)
RETURN a.id AS account_id, p.device_id AS device_id, p.event_time AS event_time"""
SET_USED = """UNWIND $rows AS r
MATCH (a:Account {id: r.account_id})
MATCH (d:Device {id: r.device_id})
MERGE (a)-[u:USED]->(d)
SET u.first_seen = r.first_seen, u.last_seen = r.last_seen"""
DELETE_USED = "UNWIND $rows AS r MATCH (a:Account {id: r.account_id})-[u:USED]->(d:Device {id: r.device_id}) DELETE u"
DELETE_ORPHAN_ACCOUNTS = "UNWIND $rows AS id MATCH (n:Account {id: id}) WHERE NOT (n)--() DELETE n"
DELETE_ORPHAN_MERCHANTS = "UNWIND $rows AS id MATCH (n:Merchant {id: id}) WHERE NOT (n)--() DELETE n"
DELETE_ORPHAN_DEVICES = "UNWIND $rows AS id MATCH (n:Device {id: id}) WHERE NOT (n)--() DELETE n"
# What reconcile reads back, one key range at a time.
SCAN_PAID = """UNWIND $rows AS r
MATCH (a:Account)-[p:PAID]->(m:Merchant)
WHERE (r.lo IS NULL OR p.transaction_id >= r.lo) AND (r.hi IS NULL OR p.transaction_id < r.hi)
RETURN p.transaction_id AS transaction_id, a.id AS account_id, m.id AS merchant_id, p.amount AS amount, p.status AS status,
       p.fraud_score AS fraud_score, p.event_time AS event_time"""
SCAN_USED = """UNWIND $rows AS r
MATCH (a:Account)-[u:USED]->(d:Device)
WHERE (r.lo IS NULL OR a.id >= r.lo) AND (r.hi IS NULL OR a.id < r.hi)
RETURN a.id AS account_id, d.id AS device_id, u.first_seen AS first_seen, u.last_seen AS last_seen"""
# Concurrent writers (a Neo4j server) take the write locks of the accounts a block touches first.
LOCK_ACCOUNTS = "UNWIND $rows AS id MATCH (a:Account {id: id}) SET a._lock = true REMOVE a._lock"

LADYBUG_SCHEMA = (
    "CREATE NODE TABLE IF NOT EXISTS Account(id STRING, PRIMARY KEY(id))",
    "CREATE NODE TABLE IF NOT EXISTS Merchant(id STRING, name STRING, category STRING, PRIMARY KEY(id))",
    "CREATE NODE TABLE IF NOT EXISTS Device(id STRING, PRIMARY KEY(id))",
    "CREATE REL TABLE IF NOT EXISTS PAID(FROM Account TO Merchant, transaction_id STRING, amount DOUBLE, "
    "event_time TIMESTAMP, status STRING, fraud_score DOUBLE, version TIMESTAMP, device_id STRING)",
    "ALTER TABLE PAID ADD IF NOT EXISTS device_id STRING",  # graphs made before deletes
    "CREATE NODE TABLE IF NOT EXISTS PaidTombstone(transaction_id STRING, version TIMESTAMP, PRIMARY KEY(transaction_id))",
    "CREATE REL TABLE IF NOT EXISTS USED(FROM Account TO Device, first_seen TIMESTAMP, last_seen TIMESTAMP)",
)
NEO4J_SCHEMA = (
    "CREATE CONSTRAINT account_id IF NOT EXISTS FOR (n:Account) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT merchant_id IF NOT EXISTS FOR (n:Merchant) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT device_id IF NOT EXISTS FOR (n:Device) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT paid_tombstone_id IF NOT EXISTS FOR (n:PaidTombstone) REQUIRE n.transaction_id IS UNIQUE",
    "CREATE INDEX paid_transaction_id IF NOT EXISTS FOR ()-[r:PAID]-() ON (r.transaction_id)",
)
#: What the schema means on a server without Neo4j's constraint DDL (FalkorDB): exact-match indexes
#: (FalkorDB runs one write query at a time per graph, so MERGE cannot create a key twice).
INDEXES = (("Account", "id"), ("Merchant", "id"), ("Device", "id"), ("PaidTombstone", "transaction_id"))
COUNT_TOMBSTONES = "MATCH (t:PaidTombstone) RETURN count(t)"
COUNTS = {
    "Account": "MATCH (n:Account) RETURN count(n)",
    "Merchant": "MATCH (n:Merchant) RETURN count(n)",
    "Device": "MATCH (n:Device) RETURN count(n)",
    "PAID": "MATCH ()-[r:PAID]->() RETURN count(r)",
    "USED": "MATCH ()-[r:USED]->() RETURN count(r)",
}
