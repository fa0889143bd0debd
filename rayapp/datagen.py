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

import io
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayapp.schema import CONTRACT_COLUMNS

FORMATS = ("csv", "jsonl", "parquet")
DEFAULT_START = datetime(2025, 1, 1, tzinfo=timezone.utc)

COUNTRIES = ("US", "GB", "DE", "FR", "CA", "AU", "JP", "IN", "BR", "MX", "SG", "CN", "CH", "ES", "IT", "NL")
COUNTRY_P = np.array([0.34, 0.09, 0.08, 0.06, 0.06, 0.05, 0.05, 0.05, 0.04, 0.04, 0.03, 0.03, 0.02, 0.02, 0.02, 0.02])
CURRENCY_OF = {
    "US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "CA": "CAD", "AU": "AUD", "JP": "JPY", "IN": "INR",
    "BR": "BRL", "MX": "MXN", "SG": "SGD", "CN": "CNY", "CH": "CHF", "ES": "EUR", "IT": "EUR", "NL": "EUR",
}  # fmt: skip

CATEGORIES = (
    "grocery", "restaurants", "fuel", "travel", "electronics", "clothing", "entertainment", "utilities",
    "health", "home_improvement", "gift_cards", "crypto_exchange", "jewelry", "online_gaming",
)  # fmt: skip
CATEGORY_P = np.array([0.17, 0.15, 0.10, 0.07, 0.08, 0.09, 0.07, 0.06, 0.06, 0.05, 0.03, 0.02, 0.02, 0.03])
RISKY_CATEGORIES = frozenset({"gift_cards", "crypto_exchange", "jewelry", "online_gaming", "electronics"})

_ADJ = ("Blue", "Golden", "Urban", "Green", "Silver", "Bright", "Royal", "North", "Happy", "Swift", "Prime", "Lucky",
        "Coastal", "Maple", "Red", "Sunny", "Grand", "Little", "Metro", "Star")  # fmt: skip
_NOUN = {
    "grocery": ("Market", "Grocer", "Pantry", "Foods"), "restaurants": ("Bistro", "Kitchen", "Diner", "Grill"),
    "fuel": ("Fuel", "Gas", "Petrol", "Energy"), "travel": ("Travel", "Airways", "Tours", "Journeys"),
    "electronics": ("Electronics", "Gadgets", "Tech", "Devices"), "clothing": ("Apparel", "Outfitters", "Threads", "Boutique"),
    "entertainment": ("Cinema", "Arcade", "Tickets", "Theater"), "utilities": ("Power", "Water Co", "Telecom", "Utilities"),
    "health": ("Pharmacy", "Clinic", "Health", "Wellness"), "home_improvement": ("Hardware", "Home Center", "Supply", "Lumber"),
    "gift_cards": ("Gift Cards", "Vouchers", "Card Shop", "Rewards"), "crypto_exchange": ("Crypto", "Coin Exchange", "Bitmart", "Token Hub"),
    "jewelry": ("Jewelers", "Gems", "Diamonds", "Gold Shop"), "online_gaming": ("Games", "Play Store", "Gaming", "Loot"),
}  # fmt: skip
_CATEGORY_BLURB = {
    "grocery": "everyday groceries and fresh produce", "restaurants": "casual dining and takeaway meals",
    "fuel": "fuel station with convenience store", "travel": "flights, hotels and travel packages",
    "electronics": "consumer electronics, phones and laptops", "clothing": "fashion, shoes and accessories",
    "entertainment": "movies, concerts and events", "utilities": "monthly utility and phone bills",
    "health": "pharmacy and health products", "home_improvement": "tools, paint and building supplies",
    "gift_cards": "prepaid gift cards and vouchers", "crypto_exchange": "cryptocurrency purchases and transfers",
    "jewelry": "watches, rings and fine jewelry", "online_gaming": "in-game currency and digital items",
}  # fmt: skip

# Hash streams: each random quantity draws from its own stream so changing one never shifts another.
(S_EVENT, S_DUPOFF, S_VEROFF, S_VERSTAGE, S_NEWSTAGE, S_BURST, S_BLEN, S_BSTART, S_BACC, S_ATO, S_RING, S_RINGID,
 S_RINGK, S_ACC, S_MER, S_RISKYMER, S_DEVKIND, S_TRAVEL, S_TRAVELC, S_AMT1, S_AMT2, S_CHAN, S_FRAUD, S_LABEL,
 S_LABELTXT, S_REVERSE, S_DELAY0, S_DELAY1, S_DELAY2, S_TSFMT, S_MESS, S_MESSKIND, S_INVALID, S_INVKIND, S_JITTER,
 S_EXTRA, S_ACC_COUNTRY, S_ACC_MU, S_MER_CAT, S_MER_NAME, S_MER_COUNTRY, S_TXID) = range(1, 43)  # fmt: skip

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _key(seed: int, stream: int) -> np.uint64:
    k = (seed * 0x100000001B3 + stream * 0xC2B2AE3D27D4EB4F + 0x165667B19E3779F9) & _MASK64
    return _mix(np.array([k], dtype=np.uint64))[0]


def _u64(seed: int, stream: int, idx: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _mix(idx.astype(np.uint64) * _GOLDEN + _key(seed, stream))


def _unif(seed: int, stream: int, idx: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) that depend only on (seed, stream, idx)."""
    return (_u64(seed, stream, idx) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _choice(u: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(np.cumsum(p) / p.sum(), u, side="right"), len(p) - 1)


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
class _Entities:
    acc_country: np.ndarray  # index into COUNTRIES
    acc_mu: np.ndarray  # log of usual amount
    mer_id: pa.Array
    mer_name: pa.Array
    mer_cat: np.ndarray  # index into CATEGORIES
    mer_desc: pa.Array
    risky_mer: np.ndarray  # merchant indices in risky categories


def _entities(spec: GenSpec) -> _Entities:
    s = spec.seed
    a = np.arange(spec.n_accounts)
    acc_country = _choice(_unif(s, S_ACC_COUNTRY, a), COUNTRY_P)
    acc_mu = 2.3 + 1.8 * _unif(s, S_ACC_MU, a)
    m = np.arange(spec.n_merchants)
    cat = _choice(_unif(s, S_MER_CAT, m), CATEGORY_P)
    name_u = _u64(s, S_MER_NAME, m)
    mer_country = _choice(_unif(s, S_MER_COUNTRY, m), COUNTRY_P)
    names, descs = [], []
    for i in range(spec.n_merchants):
        c = CATEGORIES[cat[i]]
        nu = int(name_u[i])
        name = f"{_ADJ[nu % len(_ADJ)]} {_NOUN[c][(nu >> 8) % 4]}"
        if (nu >> 16) % 3 == 0:
            name += f" #{(nu >> 20) % 90 + 10}"
        names.append(name)
        descs.append(f"{name}: {_CATEGORY_BLURB[c]} ({COUNTRIES[mer_country[i]]})")
    mer_ids = [f"MER{i:06d}" for i in range(spec.n_merchants)]
    risky = np.array([i for i in range(spec.n_merchants) if CATEGORIES[cat[i]] in RISKY_CATEGORIES] or [0])
    return _Entities(acc_country, acc_mu, pa.array(mer_ids), pa.array(names), cat, pa.array(descs), risky)


# ---- formatting helpers ------------------------------------------------------------------------


def _prefixed(prefix: str, values: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pa.array(values.astype(np.int64)).cast(pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _money(cents: np.ndarray) -> pa.Array:
    neg = cents < 0
    c = np.abs(cents).astype(np.int64)
    whole = pa.array(c // 100).cast(pa.string())
    frac = pc.utf8_lpad(pa.array(c % 100).cast(pa.string()), width=2, padding="0")
    txt = pc.binary_join_element_wise(whole, frac, ".")
    return pc.if_else(pa.array(neg), pc.binary_join_element_wise("-", txt, ""), txt)


_TS_FORMATS = (  # (date/time separator, offset seconds, suffix)
    ("T", 0, "Z"),
    ("T", 0, "+00:00"),
    (" ", 0, ""),  # naive = UTC
    ("T", 7200, "+02:00"),
    ("T", -18000, "-05:00"),
    ("T", 19800, "+05:30"),
)
_TS_P = np.array([0.45, 0.15, 0.15, 0.1, 0.1, 0.05])


def _iso(epoch_s: np.ndarray, fmt_idx: np.ndarray) -> pa.Array:
    """ISO-8601 text in a mix of styles (Z, explicit offsets, naive UTC) for the same instants."""
    out = pa.nulls(len(epoch_s), pa.string())
    for k, (sep, off, suffix) in enumerate(_TS_FORMATS):
        mask = fmt_idx == k
        if not mask.any():
            continue
        txt = pa.array(epoch_s[mask] + off, pa.timestamp("s")).cast(pa.string())  # "YYYY-MM-DD HH:MM:SS"
        if sep != " ":
            txt = pc.replace_substring(txt, " ", sep, max_replacements=1)
        if suffix:
            txt = pc.binary_join_element_wise(txt, suffix, "")
        out = pc.replace_with_mask(out, pa.array(mask), txt)
    return out


def _pick(idx: np.ndarray, options: tuple[str, ...]) -> pa.Array:
    return pa.array(list(options)).take(pa.array(idx.astype(np.int64)))


# ---- records -----------------------------------------------------------------------------------

_NEW, _VER, _DUP = 0, 1, 2
P_DUP, P_VER, P_INVALID, P_MESS = 0.03, 0.07, 0.012, 0.03


def _kinds(spec: GenSpec, rows: np.ndarray) -> np.ndarray:
    e = _unif(spec.seed, S_EVENT, rows)
    kind = np.where(e < P_DUP, _DUP, np.where(e < P_DUP + P_VER, _VER, _NEW))
    kind[rows == 0] = _NEW
    return kind


def _records(spec: GenSpec, ent: _Entities, rows: np.ndarray, depth: int = 0) -> dict[str, pa.Array]:
    """The contract record (all text) emitted at each row in ``rows``."""
    s = spec.seed
    n = len(rows)
    kind = _kinds(spec, rows)
    if depth > 30:
        kind[:] = _NEW
    # Re-sends: copy the record of an earlier row.
    dup_src = rows - 1 - np.floor(_unif(s, S_DUPOFF, rows) * np.minimum(rows, 50_000)).astype(np.int64)
    # Versions: an earlier *new* row's transaction at some stage.
    window = max(1000, spec.rows // 6)
    ver_base = rows - 1 - np.floor(_unif(s, S_VEROFF, rows) * np.minimum(rows, window)).astype(np.int64)
    ver_ok = (kind == _VER) & (_kinds(spec, np.maximum(ver_base, 0)) == _NEW)
    kind = np.where((kind == _VER) & ~ver_ok, _NEW, kind)

    base = np.where(kind == _VER, ver_base, rows)
    vs = _unif(s, S_VERSTAGE, rows)
    stage = np.where(
        kind == _VER,
        np.where(vs < 0.15, 0, np.where(vs < 0.6, 1, 2)),
        np.where(_unif(s, S_NEWSTAGE, rows) < 0.75, 0, 1),
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
    spec: GenSpec, ent: _Entities, b: np.ndarray, stage: np.ndarray, rows: np.ndarray, invalid_ok: np.ndarray
) -> dict[str, pa.Array]:
    s = spec.seed
    n_acc = spec.n_accounts
    # -- fraud pattern of the transaction
    block = b // 256
    pos = b % 256
    blen = 6 + np.floor(_unif(s, S_BLEN, block) * 10).astype(np.int64)
    bstart = np.floor(_unif(s, S_BSTART, block) * (256 - blen)).astype(np.int64)
    burst = (_unif(s, S_BURST, block) < 0.2) & (pos >= bstart) & (pos < bstart + blen)
    ato = ~burst & (_unif(s, S_ATO, b) < 0.004)
    ring = ~burst & ~ato & (_unif(s, S_RING, b) < 0.003)
    normal = ~(burst | ato | ring)

    # -- account
    acc = np.floor(_unif(s, S_ACC, b) ** 1.3 * n_acc).astype(np.int64)
    acc = np.where(burst, np.floor(_unif(s, S_BACC, block) * n_acc).astype(np.int64), acc)
    n_rings = max(3, n_acc // 3000)
    ring_id = np.floor(_unif(s, S_RINGID, b) * n_rings).astype(np.int64)
    ring_acc = (ring_id * 7919 + np.floor(_unif(s, S_RINGK, b) * 12).astype(np.int64) * 104729 + 17) % n_acc
    acc = np.where(ring, ring_acc, acc)

    # -- merchant
    mer = np.floor(_unif(s, S_MER, b) ** 2 * spec.n_merchants).astype(np.int64)
    risky_pick = ent.risky_mer[np.floor(_unif(s, S_RISKYMER, b) * len(ent.risky_mer)).astype(np.int64)]
    mer = np.where(normal, mer, risky_pick)
    cat_idx = ent.mer_cat[mer]
    risky_cat = np.isin(cat_idx, [CATEGORIES.index(c) for c in RISKY_CATEGORIES])

    # -- device
    dk = _unif(s, S_DEVKIND, b)
    dev = np.where(dk < 0.04, acc * 2 + 1, acc * 2)  # home device, sometimes a second known one
    dev = np.where(dk > 0.99, 1_000_000_000 + (_u64(s, S_DEVKIND, b) % np.uint64(10**8)).astype(np.int64), dev)
    dev = np.where(burst, 2_000_000_000 + block % 10**8, dev)
    dev = np.where(ato, 3_000_000_000 + b % 10**8, dev)
    dev = np.where(ring, 4_000_000_000 + ring_id, dev)

    # -- country and currency
    home = ent.acc_country[acc]
    other = np.floor(_unif(s, S_TRAVELC, b) * len(COUNTRIES)).astype(np.int64)
    other = np.where(other == home, (other + 1) % len(COUNTRIES), other)
    travel = normal & (_unif(s, S_TRAVEL, b) < 0.03)
    country = np.where(travel | ato | (burst & (_unif(s, S_TRAVEL, b) < 0.5)) | ring, other, home)

    # -- amount (cents)
    u1, u2 = _unif(s, S_AMT1, b), _unif(s, S_AMT2, b)
    z = np.sqrt(-2.0 * np.log(np.maximum(u1, 1e-12))) * np.cos(2 * np.pi * u2)
    mu = ent.acc_mu[acc]
    amt = np.exp(mu + 0.8 * z)
    amt = np.where(burst, 0.5 + 9.5 * u2, amt)
    amt = np.where(ato, np.exp(mu) * (6 + 10 * u2), amt)
    amt = np.where(ring, 200 + 1800 * u2, amt)
    cents = np.clip(np.round(amt * 100), 50, 5_000_000).astype(np.int64)

    # -- channel
    cu = _unif(s, S_CHAN, b)
    chan = np.where(cu < 0.5, 1, np.where(cu < 0.8, 0, np.where(cu < 0.95, 3, 2)))  # 0 online 1 pos 2 atm 3 mobile
    chan = np.where(burst | ring, 0, chan)
    chan = np.where(ato, np.where(u1 < 0.6, 0, 3), chan)

    # -- label
    fu = _unif(s, S_FRAUD, b)
    fraud = burst | (ato & (fu < 0.95)) | (ring & (fu < 0.9)) | (normal & (fu < np.where(risky_cat, 0.006, 0.0015)))

    # -- times (whole seconds, UTC epoch)
    t0 = int(spec.start.timestamp())
    event = t0 + np.floor((b + _unif(s, S_JITTER, b) * 0.9) * spec.span_s / spec.rows).astype(np.int64)
    d0 = 1 + np.floor(_unif(s, S_DELAY0, b) * 120)
    d1 = 3600 + np.floor(_unif(s, S_DELAY1, b) * 72 * 3600)
    d2 = 5 * 86400 + np.floor(_unif(s, S_DELAY2, b) * 40 * 86400)
    updated = event + np.where(stage == 0, d0, np.where(stage == 1, d1, d2)).astype(np.int64)

    # -- status
    reversed_ = _unif(s, S_REVERSE, b) < 0.3
    status_idx = np.where(stage == 0, 0, np.where(stage == 1, 1, np.where(fraud, 3, np.where(reversed_, 2, 1))))
    status = _pick(status_idx, ("pending", "settled", "reversed", "chargeback"))

    lu = _unif(s, S_LABELTXT, rows)
    unknown = (stage == 0) & (_unif(s, S_LABEL, b) < 0.4)
    label_true = _pick(np.floor(lu * 4), ("true", "1", "True", "TRUE"))
    label_false = _pick(np.floor(lu * 3), ("false", "0", "False"))
    is_fraud = pc.if_else(pa.array(unknown), "", pc.if_else(pa.array(fraud), label_true, label_false))

    # -- text columns
    txid_num = (b.astype(np.uint64) * np.uint64(982451653) + np.uint64(spec.seed * 7 + 1)) % np.uint64(10**12)
    cols: dict[str, pa.Array] = {
        "transaction_id": _prefixed("TX", txid_num, 12),
        "account_id": _prefixed("ACC", acc, 7),
        "merchant_id": ent.mer_id.take(pa.array(mer)),
        "merchant_name": ent.mer_name.take(pa.array(mer)),
        "merchant_category": _pick(cat_idx, CATEGORIES),
        "amount": _money(cents),
        "currency": _pick(country, tuple(CURRENCY_OF[c] for c in COUNTRIES)),
        "country": _pick(country, COUNTRIES),
        "channel": _pick(chan, ("online", "pos", "atm", "mobile")),
        "device_id": _prefixed("DEV", dev, 10),
        "ip_address": _ip(dev, country, home),
        "status": status,
        "description": _description(chan, ent.mer_name.take(pa.array(mer)), b),
        "is_fraud": is_fraud,
        "event_time": _iso(event, _choice(_unif(s, S_TSFMT, rows), _TS_P)),
        "updated_at": _iso(updated, _choice(_unif(s, S_TSFMT + 100, rows), _TS_P)),
    }
    _mess(spec, cols, rows)
    _corrupt(spec, cols, rows, invalid_ok)
    return cols


def _ip(dev: np.ndarray, country: np.ndarray, home: np.ndarray) -> pa.Array:
    h = (dev.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(1 << 24)
    first = np.where(country == home, 10 + (country % 60), 100 + country)
    parts = [first, (h >> np.uint64(16)) % np.uint64(256), (h >> np.uint64(8)) % np.uint64(256), h % np.uint64(254) + np.uint64(1)]
    arrs = [pa.array(p.astype(np.int64)).cast(pa.string()) for p in parts]
    return pc.binary_join_element_wise(*arrs, ".")


def _description(chan: np.ndarray, names: pa.Array, b: np.ndarray) -> pa.Array:
    prefix = _pick(chan, ("Online order at", "Card purchase at", "ATM withdrawal near", "Mobile payment to"))
    ref = pa.array((b % 100000).astype(np.int64)).cast(pa.string())
    return pc.binary_join_element_wise(prefix, names, pc.binary_join_element_wise("ref", ref, " "), " ")


def _mess(spec: GenSpec, cols: dict[str, pa.Array], rows: np.ndarray) -> None:
    """Case and whitespace noise that normalisation must undo (rows stay valid)."""
    s = spec.seed
    messy = _unif(s, S_MESS, rows) < P_MESS
    if not messy.any():
        return
    k = np.floor(_unif(s, S_MESSKIND, rows) * 5).astype(np.int64)
    m = lambda i: pa.array(messy & (k == i))  # noqa: E731
    cols["currency"] = pc.if_else(m(0), pc.binary_join_element_wise(" ", pc.utf8_lower(cols["currency"]), " ", ""), cols["currency"])
    cols["channel"] = pc.if_else(m(1), pc.utf8_upper(cols["channel"]), cols["channel"])
    cols["status"] = pc.if_else(m(2), pc.binary_join_element_wise(pc.utf8_capitalize(cols["status"]), "  ", ""), cols["status"])
    cols["account_id"] = pc.if_else(m(3), pc.binary_join_element_wise("  ", cols["account_id"], "\t", ""), cols["account_id"])
    cols["country"] = pc.if_else(m(4), pc.utf8_lower(cols["country"]), cols["country"])
    cols["merchant_category"] = pc.if_else(m(4), pc.utf8_upper(cols["merchant_category"]), cols["merchant_category"])


_CORRUPTIONS = (
    ("transaction_id", ""), ("account_id", ""), ("merchant_id", "   "), ("amount", "12,50x"), ("amount", "abc"),
    ("amount", "-15.00"), ("amount", "0"), ("amount", "2500000.00"), ("currency", "XYZ"),
    ("event_time", "2025-13-45T99:00:00"), ("updated_at", "not-a-date"), ("channel", "fax"),
    ("status", "unknown"), ("country", "USA"), ("event_time", ""),
)  # fmt: skip


def _corrupt(spec: GenSpec, cols: dict[str, pa.Array], rows: np.ndarray, ok: np.ndarray) -> None:
    s = spec.seed
    bad = ok & (_unif(s, S_INVALID, rows) < P_INVALID)
    if not bad.any():
        return
    kind = np.floor(_unif(s, S_INVKIND, rows) * len(_CORRUPTIONS)).astype(np.int64)
    for i, (col, value) in enumerate(_CORRUPTIONS):
        mask = bad & (kind == i)
        if mask.any():
            cols[col] = pc.if_else(pa.array(mask), pa.scalar(value), cols[col])


# ---- files ---------------------------------------------------------------------------------------


def generate_table(spec: GenSpec, f: int, entities: _Entities | None = None) -> pa.Table:
    """The records of file ``f`` as an all-text Arrow table, plus the file's extra columns."""
    lo, hi = spec.file_rows(f)
    ent = entities or _entities(spec)
    rows = np.arange(lo, hi, dtype=np.int64)
    cols = _records(spec, ent, rows)
    table = pa.table({c: cols[c] for c in CONTRACT_COLUMNS})
    fmt = spec.file_format(f)
    eu = _unif(spec.seed, S_EXTRA, rows)
    if fmt == "csv" and f % 2 == 0:
        table = table.append_column("loyalty_tier", _pick(np.floor(eu * 4), ("gold", "silver", "bronze", "")))
    elif fmt == "parquet":
        table = table.append_column("card_bin", _prefixed("4", np.floor(eu * 99999), 5))
    elif fmt == "jsonl":
        promo = pc.if_else(pa.array(eu < 0.1), _prefixed("PROMO", np.floor(eu * 1000), 3), pa.nulls(len(rows), pa.string()))
        table = table.append_column("promo_code", promo)
    return table


def encode(table: pa.Table, fmt: str) -> bytes:
    """Serialise a generated table in a landing format (deterministic bytes)."""
    buf = io.BytesIO()
    if fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, buf)
    elif fmt == "jsonl":
        import polars as pl

        pl.from_arrow(table).write_ndjson(buf)  # type: ignore[union-attr]
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        # Parquet producers send typed values: numbers, booleans (text stays text where it can be bad).
        amount = _to_float(table["amount"])
        flag = pc.utf8_lower(table["is_fraud"])
        is_false = pc.if_else(pc.is_in(flag, pa.array(["false", "0"])), False, pa.scalar(None, pa.bool_()))
        is_fraud = pc.if_else(pc.is_in(flag, pa.array(["true", "1"])), True, is_false)
        table = table.set_column(table.schema.get_field_index("amount"), "amount", amount)
        table = table.set_column(table.schema.get_field_index("is_fraud"), "is_fraud", is_fraud)
        pq.write_table(table, buf, compression="snappy")
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return buf.getvalue()


def _to_float(col: pa.ChunkedArray) -> pa.Array:
    import polars as pl

    return pl.from_arrow(col).cast(pl.Float64, strict=False).to_arrow()  # type: ignore[union-attr]
