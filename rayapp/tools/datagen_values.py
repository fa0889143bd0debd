"""Value-level helpers of the synthetic data generator: vocabularies, counter-based hashing
(every value a pure function of seed, stream and row), text formatting and file encoding."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_MASK64 = (1 << 64) - 1

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


ADJECTIVES = ("Blue", "Golden", "Urban", "Green", "Silver", "Bright", "Royal", "North", "Happy", "Swift", "Prime", "Lucky",
        "Coastal", "Maple", "Red", "Sunny", "Grand", "Little", "Metro", "Star")  # fmt: skip


NOUNS = {
    "grocery": ("Market", "Grocer", "Pantry", "Foods"), "restaurants": ("Bistro", "Kitchen", "Diner", "Grill"),
    "fuel": ("Fuel", "Gas", "Petrol", "Energy"), "travel": ("Travel", "Airways", "Tours", "Journeys"),
    "electronics": ("Electronics", "Gadgets", "Tech", "Devices"), "clothing": ("Apparel", "Outfitters", "Threads", "Boutique"),
    "entertainment": ("Cinema", "Arcade", "Tickets", "Theater"), "utilities": ("Power", "Water Co", "Telecom", "Utilities"),
    "health": ("Pharmacy", "Clinic", "Health", "Wellness"), "home_improvement": ("Hardware", "Home Center", "Supply", "Lumber"),
    "gift_cards": ("Gift Cards", "Vouchers", "Card Shop", "Rewards"), "crypto_exchange": ("Crypto", "Coin Exchange", "Bitmart", "Token Hub"),
    "jewelry": ("Jewelers", "Gems", "Diamonds", "Gold Shop"), "online_gaming": ("Games", "Play Store", "Gaming", "Loot"),
}  # fmt: skip


CATEGORY_BLURB = {
    "grocery": "everyday groceries and fresh produce", "restaurants": "casual dining and takeaway meals",
    "fuel": "fuel station with convenience store", "travel": "flights, hotels and travel packages",
    "electronics": "consumer electronics, phones and laptops", "clothing": "fashion, shoes and accessories",
    "entertainment": "movies, concerts and events", "utilities": "monthly utility and phone bills",
    "health": "pharmacy and health products", "home_improvement": "tools, paint and building supplies",
    "gift_cards": "prepaid gift cards and vouchers", "crypto_exchange": "cryptocurrency purchases and transfers",
    "jewelry": "watches, rings and fine jewelry", "online_gaming": "in-game currency and digital items",
}  # fmt: skip


GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def stream_key(seed: int, stream: int) -> np.uint64:
    k = (seed * 0x100000001B3 + stream * 0xC2B2AE3D27D4EB4F + 0x165667B19E3779F9) & _MASK64
    return mix(np.array([k], dtype=np.uint64))[0]


def u64(seed: int, stream: int, idx: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return mix(idx.astype(np.uint64) * GOLDEN + stream_key(seed, stream))


def unif(seed: int, stream: int, idx: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) that depend only on (seed, stream, idx)."""
    return (u64(seed, stream, idx) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def choice(u: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(np.cumsum(p) / p.sum(), u, side="right"), len(p) - 1)


def prefixed(prefix: str, values: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pa.array(values.astype(np.int64)).cast(pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def money(cents: np.ndarray) -> pa.Array:
    neg = cents < 0
    c = np.abs(cents).astype(np.int64)
    whole = pa.array(c // 100).cast(pa.string())
    frac = pc.utf8_lpad(pa.array(c % 100).cast(pa.string()), width=2, padding="0")
    txt = pc.binary_join_element_wise(whole, frac, ".")
    return pc.if_else(pa.array(neg), pc.binary_join_element_wise("-", txt, ""), txt)


TS_FORMATS = (  # (date/time separator, offset seconds, suffix)
    ("T", 0, "Z"),
    ("T", 0, "+00:00"),
    (" ", 0, ""),  # naive = UTC
    ("T", 7200, "+02:00"),
    ("T", -18000, "-05:00"),
    ("T", 19800, "+05:30"),
)


TS_P = np.array([0.45, 0.15, 0.15, 0.1, 0.1, 0.05])


def iso(epoch_s: np.ndarray, fmt_idx: np.ndarray) -> pa.Array:
    """ISO-8601 text in a mix of styles (Z, explicit offsets, naive UTC) for the same instants."""
    out = pa.nulls(len(epoch_s), pa.string())
    for k, (sep, off, suffix) in enumerate(TS_FORMATS):
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


def pick(idx: np.ndarray, options: tuple[str, ...]) -> pa.Array:
    return pa.array(list(options)).take(pa.array(idx.astype(np.int64)))


def ip_address(dev: np.ndarray, country: np.ndarray, home: np.ndarray) -> pa.Array:
    h = (dev.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(1 << 24)
    first = np.where(country == home, 10 + (country % 60), 100 + country)
    parts = [first, (h >> np.uint64(16)) % np.uint64(256), (h >> np.uint64(8)) % np.uint64(256), h % np.uint64(254) + np.uint64(1)]
    arrs = [pa.array(p.astype(np.int64)).cast(pa.string()) for p in parts]
    return pc.binary_join_element_wise(*arrs, ".")


def description(chan: np.ndarray, names: pa.Array, b: np.ndarray) -> pa.Array:
    prefix = pick(chan, ("Online order at", "Card purchase at", "ATM withdrawal near", "Mobile payment to"))
    ref = pa.array((b % 100000).astype(np.int64)).cast(pa.string())
    return pc.binary_join_element_wise(prefix, names, pc.binary_join_element_wise("ref", ref, " "), " ")


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
        amount = to_float(table["amount"])
        flag = pc.utf8_lower(table["is_fraud"])
        is_false = pc.if_else(pc.is_in(flag, pa.array(["false", "0"])), False, pa.scalar(None, pa.bool_()))
        is_fraud = pc.if_else(pc.is_in(flag, pa.array(["true", "1"])), True, is_false)
        table = table.set_column(table.schema.get_field_index("amount"), "amount", amount)
        table = table.set_column(table.schema.get_field_index("is_fraud"), "is_fraud", is_fraud)
        pq.write_table(table, buf, compression="snappy")
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return buf.getvalue()


def to_float(col: pa.ChunkedArray) -> pa.Array:
    import polars as pl

    return pl.from_arrow(col).cast(pl.Float64, strict=False).to_arrow()  # type: ignore[union-attr]



def mess(s: int, cols: dict[str, pa.Array], rows: np.ndarray, p: float, streams: tuple[int, int]) -> None:
    """Case and whitespace noise that normalisation must undo (rows stay valid), on a share ``p`` of rows."""
    messy = unif(s, streams[0], rows) < p
    if not messy.any():
        return
    k = np.floor(unif(s, streams[1], rows) * 5).astype(np.int64)
    m = lambda i: pa.array(messy & (k == i))  # noqa: E731
    cols["currency"] = pc.if_else(m(0), pc.binary_join_element_wise(" ", pc.utf8_lower(cols["currency"]), " ", ""), cols["currency"])
    cols["channel"] = pc.if_else(m(1), pc.utf8_upper(cols["channel"]), cols["channel"])
    cols["status"] = pc.if_else(m(2), pc.binary_join_element_wise(pc.utf8_capitalize(cols["status"]), "  ", ""), cols["status"])
    cols["account_id"] = pc.if_else(m(3), pc.binary_join_element_wise("  ", cols["account_id"], "\t", ""), cols["account_id"])
    cols["country"] = pc.if_else(m(4), pc.utf8_lower(cols["country"]), cols["country"])
    cols["merchant_category"] = pc.if_else(m(4), pc.utf8_upper(cols["merchant_category"]), cols["merchant_category"])


CORRUPTIONS = (
    ("transaction_id", ""), ("account_id", ""), ("merchant_id", "   "), ("amount", "12,50x"), ("amount", "abc"),
    ("amount", "-15.00"), ("amount", "0"), ("amount", "2500000.00"), ("currency", "XYZ"),
    ("event_time", "2025-13-45T99:00:00"), ("updated_at", "not-a-date"), ("channel", "fax"),
    ("status", "unknown"), ("country", "USA"), ("event_time", ""),
)  # fmt: skip


def corrupt(s: int, cols: dict[str, pa.Array], rows: np.ndarray, ok: np.ndarray, p: float, streams: tuple[int, int]) -> None:
    """Invalid values of varied kinds in a share ``p`` of the rows where ``ok``."""
    bad = ok & (unif(s, streams[0], rows) < p)
    if not bad.any():
        return
    kind = np.floor(unif(s, streams[1], rows) * len(CORRUPTIONS)).astype(np.int64)
    for i, (col, value) in enumerate(CORRUPTIONS):
        mask = bad & (kind == i)
        if mask.any():
            cols[col] = pc.if_else(pa.array(mask), pa.scalar(value), cols[col])
