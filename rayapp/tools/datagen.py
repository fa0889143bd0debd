"""Deterministic synthetic transaction events following the raw-input contract.

Every emitted row ``r`` (0 ≤ r < rows) is a pure function of ``(seed, r)``: a counter-based
hash gives each row its randomness, so any file can be produced by any worker, in any order,
with identical bytes and without holding the dataset in memory. A row is one of:

* a **new** transaction (its base row ``b = r``), first version ``pending`` (or ``settled``);
* a **version** of an earlier transaction ``b < r`` at a stage (pending → settled →
  chargeback/reversed): usually newer than what was sent before, sometimes older
  (an old version arriving late), possibly in a later file;
* an **exact re-send** of an earlier row's record.

Fraud (≈1.5–2.5% of transactions) follows learnable patterns: card-testing bursts (many
small online payments from one account in minutes, new device, risky merchants), account
takeover (new device + foreign country + amount far above the account's usual), fraud rings
(a few devices shared by many accounts), and a higher base rate in risky categories.
About 1% of rows are invalid in varied ways and ~3% carry case/whitespace mess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayapp.catalog import CONTRACT_COLUMNS
from rayapp.tools.datagen_values import (
    ADJECTIVES,
    CATEGORIES,
    CATEGORY_BLURB,
    CATEGORY_P,
    COUNTRIES,
    COUNTRY_P,
    CURRENCY_OF,
    NOUNS,
    RISKY_CATEGORIES,
    TS_P,
    choice,
    corrupt,
    description,
    ip_address,
    iso,
    mess,
    money,
    pick,
    prefixed,
    u64,
    unif,
)

FORMATS = ("csv", "jsonl", "parquet")
DEFAULT_START = datetime(2025, 1, 1, tzinfo=timezone.utc)


# Hash streams: each random quantity draws from its own stream so changing one never shifts another.
(S_EVENT, S_DUPOFF, S_VEROFF, S_VERSTAGE, S_NEWSTAGE, S_BURST, S_BLEN, S_BSTART, S_BACC, S_ATO, S_RING, S_RINGID,
 S_RINGK, S_ACC, S_MER, S_RISKYMER, S_DEVKIND, S_TRAVEL, S_TRAVELC, S_AMT1, S_AMT2, S_CHAN, S_FRAUD, S_LABEL,
 S_LABELTXT, S_REVERSE, S_DELAY0, S_DELAY1, S_DELAY2, S_TSFMT, S_MESS, S_MESSKIND, S_INVALID, S_INVKIND, S_JITTER,
 S_EXTRA, S_ACC_COUNTRY, S_ACC_MU, S_MER_CAT, S_MER_NAME, S_MER_COUNTRY, S_TXID) = range(1, 43)  # fmt: skip



@dataclass(frozen=True)
class GenSpec:
    """What to generate. ``rows`` is the exact number of records written across all files."""

    rows: int
    seed: int = 42
    files: int = 8
    formats: tuple[str, ...] = FORMATS
    start: datetime = DEFAULT_START
    days: int = 30

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ValueError("rows must be ≥ 1")
        if self.files < 1:
            raise ValueError("files must be ≥ 1")
        if not self.formats or any(f not in FORMATS for f in self.formats):
            raise ValueError(f"formats must be a non-empty subset of {', '.join(FORMATS)}")
        if self.days < 1:
            raise ValueError("days must be ≥ 1")

    @property
    def n_files(self) -> int:
        return min(self.files, self.rows)

    @property
    def n_accounts(self) -> int:
        return max(50, self.rows // 40)

    @property
    def n_merchants(self) -> int:
        return max(40, min(5000, self.rows // 1500))

    @property
    def span_s(self) -> float:
        return self.days * 86400.0

    def file_rows(self, f: int) -> tuple[int, int]:
        """Row range [lo, hi) of file ``f``."""
        n = self.n_files
        return (self.rows * f) // n, (self.rows * (f + 1)) // n

    def file_format(self, f: int) -> str:
        return self.formats[f % len(self.formats)]

    def file_name(self, f: int) -> str:
        lo, _ = self.file_rows(f)
        ts = self.start + timedelta(seconds=math.floor(lo * self.span_s / self.rows))
        return f"transactions_{ts:%Y%m%dT%H%M%SZ}_s{self.seed}_p{f:05d}.{self.file_format(f)}"


# ---- entities ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entities:
    acc_country: np.ndarray  # index into COUNTRIES
    acc_mu: np.ndarray  # log of usual amount
    mer_id: pa.Array
    mer_name: pa.Array
    mer_cat: np.ndarray  # index into CATEGORIES
    mer_desc: pa.Array
    risky_mer: np.ndarray  # merchant indices in risky categories


def entities(spec: GenSpec) -> Entities:
    s = spec.seed
    a = np.arange(spec.n_accounts)
    acc_country = choice(unif(s, S_ACC_COUNTRY, a), COUNTRY_P)
    acc_mu = 2.3 + 1.8 * unif(s, S_ACC_MU, a)
    m = np.arange(spec.n_merchants)
    cat = choice(unif(s, S_MER_CAT, m), CATEGORY_P)
    name_u = u64(s, S_MER_NAME, m)
    mer_country = choice(unif(s, S_MER_COUNTRY, m), COUNTRY_P)
    names, descs = [], []
    for i in range(spec.n_merchants):
        c = CATEGORIES[cat[i]]
        nu = int(name_u[i])
        name = f"{ADJECTIVES[nu % len(ADJECTIVES)]} {NOUNS[c][(nu >> 8) % 4]}"
        if (nu >> 16) % 3 == 0:
            name += f" #{(nu >> 20) % 90 + 10}"
        names.append(name)
        descs.append(f"{name}: {CATEGORY_BLURB[c]} ({COUNTRIES[mer_country[i]]})")
    mer_ids = [f"MER{i:06d}" for i in range(spec.n_merchants)]
    risky = np.array([i for i in range(spec.n_merchants) if CATEGORIES[cat[i]] in RISKY_CATEGORIES] or [0])
    return Entities(acc_country, acc_mu, pa.array(mer_ids), pa.array(names), cat, pa.array(descs), risky)


# ---- formatting helpers ------------------------------------------------------------------------


# ---- records -----------------------------------------------------------------------------------

_NEW, _VER, _DUP = 0, 1, 2
P_DUP, P_VER, P_INVALID, P_MESS = 0.03, 0.07, 0.012, 0.03


def _kinds(spec: GenSpec, rows: np.ndarray) -> np.ndarray:
    e = unif(spec.seed, S_EVENT, rows)
    kind = np.where(e < P_DUP, _DUP, np.where(e < P_DUP + P_VER, _VER, _NEW))
    kind[rows == 0] = _NEW
    return kind


def _records(spec: GenSpec, ent: Entities, rows: np.ndarray, depth: int = 0) -> dict[str, pa.Array]:
    """The contract record (all text) emitted at each row in ``rows``."""
    s = spec.seed
    n = len(rows)
    kind = _kinds(spec, rows)
    if depth > 30:
        kind[:] = _NEW
    # Re-sends: copy the record of an earlier row.
    dup_src = rows - 1 - np.floor(unif(s, S_DUPOFF, rows) * np.minimum(rows, 50_000)).astype(np.int64)
    # Versions: an earlier *new* row's transaction at some stage.
    window = max(1000, spec.rows // 6)
    ver_base = rows - 1 - np.floor(unif(s, S_VEROFF, rows) * np.minimum(rows, window)).astype(np.int64)
    ver_ok = (kind == _VER) & (_kinds(spec, np.maximum(ver_base, 0)) == _NEW)
    kind = np.where((kind == _VER) & ~ver_ok, _NEW, kind)

    base = np.where(kind == _VER, ver_base, rows)
    vs = unif(s, S_VERSTAGE, rows)
    stage = np.where(
        kind == _VER,
        np.where(vs < 0.15, 0, np.where(vs < 0.6, 1, 2)),
        np.where(unif(s, S_NEWSTAGE, rows) < 0.75, 0, 1),
    )
    cols = _transactions(spec, ent, base, stage, rows, invalid_ok=(kind == _NEW))

    dup = kind == _DUP
    if dup.any():
        sub = _records(spec, ent, dup_src[dup], depth + 1)
        pos = np.flatnonzero(dup)
        own = np.flatnonzero(~dup)
        # Scatter: build index into concatenation [own-values..., dup-values...]
        order = np.empty(n, dtype=np.int64)
        order[own] = np.arange(len(own))
        order[pos] = len(own) + np.arange(len(pos))
        idx = pa.array(order)
        own_mask = pa.array(~dup)
        for c in CONTRACT_COLUMNS:
            cols[c] = pa.concat_arrays([cols[c].filter(own_mask), sub[c]]).take(idx)
    return cols


def _transactions(
    spec: GenSpec, ent: Entities, b: np.ndarray, stage: np.ndarray, rows: np.ndarray, invalid_ok: np.ndarray
) -> dict[str, pa.Array]:
    s = spec.seed
    n_acc = spec.n_accounts
    # -- fraud pattern of the transaction
    block = b // 256
    pos = b % 256
    blen = 6 + np.floor(unif(s, S_BLEN, block) * 10).astype(np.int64)
    bstart = np.floor(unif(s, S_BSTART, block) * (256 - blen)).astype(np.int64)
    burst = (unif(s, S_BURST, block) < 0.2) & (pos >= bstart) & (pos < bstart + blen)
    ato = ~burst & (unif(s, S_ATO, b) < 0.004)
    ring = ~burst & ~ato & (unif(s, S_RING, b) < 0.003)
    normal = ~(burst | ato | ring)

    # -- account
    acc = np.floor(unif(s, S_ACC, b) ** 1.3 * n_acc).astype(np.int64)
    acc = np.where(burst, np.floor(unif(s, S_BACC, block) * n_acc).astype(np.int64), acc)
    n_rings = max(3, n_acc // 3000)
    ring_id = np.floor(unif(s, S_RINGID, b) * n_rings).astype(np.int64)
    ring_acc = (ring_id * 7919 + np.floor(unif(s, S_RINGK, b) * 12).astype(np.int64) * 104729 + 17) % n_acc
    acc = np.where(ring, ring_acc, acc)

    # -- merchant
    mer = np.floor(unif(s, S_MER, b) ** 2 * spec.n_merchants).astype(np.int64)
    risky_pick = ent.risky_mer[np.floor(unif(s, S_RISKYMER, b) * len(ent.risky_mer)).astype(np.int64)]
    mer = np.where(normal, mer, risky_pick)
    cat_idx = ent.mer_cat[mer]
    risky_cat = np.isin(cat_idx, [CATEGORIES.index(c) for c in RISKY_CATEGORIES])

    # -- device
    dk = unif(s, S_DEVKIND, b)
    dev = np.where(dk < 0.04, acc * 2 + 1, acc * 2)  # home device, sometimes a second known one
    dev = np.where(dk > 0.99, 1_000_000_000 + (u64(s, S_DEVKIND, b) % np.uint64(10**8)).astype(np.int64), dev)
    dev = np.where(burst, 2_000_000_000 + block % 10**8, dev)
    dev = np.where(ato, 3_000_000_000 + b % 10**8, dev)
    dev = np.where(ring, 4_000_000_000 + ring_id, dev)

    # -- country and currency
    home = ent.acc_country[acc]
    other = np.floor(unif(s, S_TRAVELC, b) * len(COUNTRIES)).astype(np.int64)
    other = np.where(other == home, (other + 1) % len(COUNTRIES), other)
    travel = normal & (unif(s, S_TRAVEL, b) < 0.03)
    country = np.where(travel | ato | (burst & (unif(s, S_TRAVEL, b) < 0.5)) | ring, other, home)

    # -- amount (cents)
    u1, u2 = unif(s, S_AMT1, b), unif(s, S_AMT2, b)
    z = np.sqrt(-2.0 * np.log(np.maximum(u1, 1e-12))) * np.cos(2 * np.pi * u2)
    mu = ent.acc_mu[acc]
    amt = np.exp(mu + 0.8 * z)
    amt = np.where(burst, 0.5 + 9.5 * u2, amt)
    amt = np.where(ato, np.exp(mu) * (6 + 10 * u2), amt)
    amt = np.where(ring, 200 + 1800 * u2, amt)
    cents = np.clip(np.round(amt * 100), 50, 5_000_000).astype(np.int64)

    # -- channel
    cu = unif(s, S_CHAN, b)
    chan = np.where(cu < 0.5, 1, np.where(cu < 0.8, 0, np.where(cu < 0.95, 3, 2)))  # 0 online 1 pos 2 atm 3 mobile
    chan = np.where(burst | ring, 0, chan)
    chan = np.where(ato, np.where(u1 < 0.6, 0, 3), chan)

    # -- label
    fu = unif(s, S_FRAUD, b)
    fraud = burst | (ato & (fu < 0.95)) | (ring & (fu < 0.9)) | (normal & (fu < np.where(risky_cat, 0.006, 0.0015)))

    # -- times (whole seconds, UTC epoch)
    t0 = int(spec.start.timestamp())
    event = t0 + np.floor((b + unif(s, S_JITTER, b) * 0.9) * spec.span_s / spec.rows).astype(np.int64)
    d0 = 1 + np.floor(unif(s, S_DELAY0, b) * 120)
    d1 = 3600 + np.floor(unif(s, S_DELAY1, b) * 72 * 3600)
    d2 = 5 * 86400 + np.floor(unif(s, S_DELAY2, b) * 40 * 86400)
    updated = event + np.where(stage == 0, d0, np.where(stage == 1, d1, d2)).astype(np.int64)

    # -- status
    reversed_ = unif(s, S_REVERSE, b) < 0.3
    status_idx = np.where(stage == 0, 0, np.where(stage == 1, 1, np.where(fraud, 3, np.where(reversed_, 2, 1))))
    status = pick(status_idx, ("pending", "settled", "reversed", "chargeback"))

    lu = unif(s, S_LABELTXT, rows)
    unknown = (stage == 0) & (unif(s, S_LABEL, b) < 0.4)
    label_true = pick(np.floor(lu * 4), ("true", "1", "True", "TRUE"))
    label_false = pick(np.floor(lu * 3), ("false", "0", "False"))
    is_fraud = pc.if_else(pa.array(unknown), "", pc.if_else(pa.array(fraud), label_true, label_false))

    # -- text columns
    txid_num = (b.astype(np.uint64) * np.uint64(982451653) + np.uint64(spec.seed * 7 + 1)) % np.uint64(10**12)
    cols: dict[str, pa.Array] = {
        "transaction_id": prefixed("TX", txid_num, 12),
        "account_id": prefixed("ACC", acc, 7),
        "merchant_id": ent.mer_id.take(pa.array(mer)),
        "merchant_name": ent.mer_name.take(pa.array(mer)),
        "merchant_category": pick(cat_idx, CATEGORIES),
        "amount": money(cents),
        "currency": pick(country, tuple(CURRENCY_OF[c] for c in COUNTRIES)),
        "country": pick(country, COUNTRIES),
        "channel": pick(chan, ("online", "pos", "atm", "mobile")),
        "device_id": prefixed("DEV", dev, 10),
        "ip_address": ip_address(dev, country, home),
        "status": status,
        "description": description(chan, ent.mer_name.take(pa.array(mer)), b),
        "is_fraud": is_fraud,
        "event_time": iso(event, choice(unif(s, S_TSFMT, rows), TS_P)),
        "updated_at": iso(updated, choice(unif(s, S_TSFMT + 100, rows), TS_P)),
    }
    mess(spec.seed, cols, rows, P_MESS, (S_MESS, S_MESSKIND))
    corrupt(spec.seed, cols, rows, invalid_ok, P_INVALID, (S_INVALID, S_INVKIND))
    return cols


# ---- files ---------------------------------------------------------------------------------------


def generate_table(spec: GenSpec, f: int, ent: Entities | None = None) -> pa.Table:
    """The records of file ``f`` as an all-text Arrow table, plus the file's extra columns."""
    lo, hi = spec.file_rows(f)
    ent = ent or entities(spec)
    rows = np.arange(lo, hi, dtype=np.int64)
    cols = _records(spec, ent, rows)
    table = pa.table({c: cols[c] for c in CONTRACT_COLUMNS})
    fmt = spec.file_format(f)
    eu = unif(spec.seed, S_EXTRA, rows)
    if fmt == "csv" and f % 2 == 0:
        table = table.append_column("loyalty_tier", pick(np.floor(eu * 4), ("gold", "silver", "bronze", "")))
    elif fmt == "parquet":
        table = table.append_column("card_bin", prefixed("4", np.floor(eu * 99999), 5))
    elif fmt == "jsonl":
        promo = pc.if_else(pa.array(eu < 0.1), prefixed("PROMO", np.floor(eu * 1000), 3), pa.nulls(len(rows), pa.string()))
        table = table.append_column("promo_code", promo)
    return table


