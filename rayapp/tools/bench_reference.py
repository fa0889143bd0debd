"""Single-process polars implementation of the bronze -> silver rules: the benchmark's yardstick.

Same rules as :mod:`rayapp.transforms.silver` (parse, expectations, normalisation, dedup), run
eagerly by polars on one machine; it writes nothing and returns the counts, so the benchmark
can compare both the time and the outcome (silver rows, quarantined rows).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from rayapp.transforms.silver import CHANNELS, CURRENCIES, STATUSES

_TS = (
    r"^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"\s*(?:[Zz]|([+-])(\d{2})(?::?(\d{2}))?)?$"
)


def _with_ts(df: Any, col: str, out: str) -> Any:
    """Add column ``out``: ``col`` parsed as ISO-8601 to UTC µs (null when invalid)."""
    import polars as pl

    g = df.select(pl.col(col).str.strip_chars().str.extract_groups(_TS).alias("_g")).unnest("_g")
    g.columns = ["y", "mo", "d", "h", "mi", "s", "f", "sg", "th", "tm"]
    ints = [pl.col(c).fill_null("0").cast(pl.Int64, strict=False).fill_null(0) for c in ("y", "mo", "d", "h", "mi", "s", "th", "tm")]
    g = g.with_columns(
        pl.col("y").is_not_null().alias("matched"), *ints,
        pl.col("f").fill_null("").str.pad_end(6, "0").str.slice(0, 6).cast(pl.Int64, strict=False).fill_null(0).alias("us"),
        pl.when(pl.col("sg") == "-").then(-1).otherwise(1).alias("sign"),
    )  # fmt: skip
    y, mo, d = pl.col("y"), pl.col("mo"), pl.col("d")
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    mdays = pl.when(mo == 2).then(pl.when(leap).then(29).otherwise(28)).when(mo.is_in([4, 6, 9, 11])).then(30).otherwise(31)
    valid = pl.col("matched") & mo.is_between(1, 12) & (d >= 1) & (d <= mdays) & (pl.col("h") <= 23) & (pl.col("mi") <= 59) & (pl.col("s") <= 59) & (pl.col("th") <= 14) & (pl.col("tm") <= 59)
    yy = y - (mo <= 2).cast(pl.Int64)
    g = g.with_columns(yy.floordiv(400).alias("era"), yy.alias("yy"), valid.alias("valid"))
    yoe = pl.col("yy") - pl.col("era") * 400
    doy = (153 * (mo + pl.when(mo > 2).then(-3).otherwise(9)) + 2).floordiv(5) + d - 1
    days = pl.col("era") * 146097 + yoe * 365 + yoe.floordiv(4) - yoe.floordiv(100) + doy - 719468
    secs = days * 86400 + pl.col("h") * 3600 + pl.col("mi") * 60 + pl.col("s") - pl.col("sign") * (pl.col("th") * 3600 + pl.col("tm") * 60)
    ts = g.select(pl.when(pl.col("valid")).then(secs * 1_000_000 + pl.col("us")).cast(pl.Datetime("us", "UTC")).alias(out))
    return df.with_columns(ts[out])


def _slow_amount(v: str | None) -> Decimal | None:
    try:
        q = Decimal(v).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)  # type: ignore[arg-type]
    except (InvalidOperation, TypeError, ValueError):
        return None
    return q if q.copy_abs() < Decimal("1e16") else None


def reference_bronze_to_silver(bronze_uri: str, storage_options: dict[str, str] | None = None) -> dict[str, int]:
    """Run the rules over a whole bronze table in one polars process; returns the outcome counts."""
    import polars as pl

    df = pl.read_delta(bronze_uri, storage_options=storage_options)
    blank = lambda c: pl.col(c).str.strip_chars().fill_null("") == ""  # noqa: E731
    amt_txt = pl.col("amount").str.strip_chars()
    simple = amt_txt.str.contains(r"^[+-]?\d{1,15}(\.\d{1,2})?$").fill_null(False)
    other = amt_txt.str.contains(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$").fill_null(False) & ~simple
    amount = (
        pl.when(simple).then(amt_txt.cast(pl.Decimal(18, 2), strict=False))
        .when(other).then(amt_txt.map_elements(_slow_amount, return_dtype=pl.Decimal(18, 2)))
    )  # fmt: skip
    amount = pl.when((amount > 0) & (amount <= 1_000_000)).then(amount)
    country = pl.col("country").str.strip_chars().str.to_uppercase()
    df = df.with_columns(
        *[pl.col(c).str.strip_chars() for c in ("transaction_id", "account_id", "merchant_id", "merchant_name", "device_id", "ip_address", "description")],
        pl.col("currency").str.strip_chars().str.to_uppercase(),
        pl.col("channel").str.strip_chars().str.to_lowercase(),
        pl.col("status").str.strip_chars().str.to_lowercase(),
        pl.col("merchant_category").str.strip_chars().str.to_lowercase(),
        pl.when(country.str.contains(r"^[A-Z]{2}$")).then(country).alias("country"),
        amount.alias("amount_d"),
        pl.col("is_fraud").str.strip_chars().str.to_lowercase().replace_strict({"true": True, "1": True, "false": False, "0": False}, default=None, return_dtype=pl.Boolean),
        blank("transaction_id").alias("r_tx"),
        blank("account_id").alias("r_acc"),
        blank("merchant_id").alias("r_mer"),
    )  # fmt: skip
    bad = (
        pl.col("r_tx") | pl.col("r_acc") | pl.col("r_mer") | pl.col("amount_d").is_null()
        | ~pl.col("currency").is_in(list(CURRENCIES)).fill_null(False) | ~pl.col("channel").is_in(list(CHANNELS)).fill_null(False)
        | ~pl.col("status").is_in(list(STATUSES)).fill_null(False) | pl.col("event_ts").is_null() | pl.col("updated_ts").is_null()
    )  # fmt: skip
    df = _with_ts(_with_ts(df, "event_time", "event_ts"), "updated_at", "updated_ts")
    df = df.with_columns(bad.alias("_bad"))
    quarantined = int(df["_bad"].sum())
    valid = df.filter(~pl.col("_bad"))
    winners = valid.sort(
        ["transaction_id", "updated_ts", "_ingested_at", "_source_file", "_source_row"], descending=[False, True, True, True, True]
    ).unique(subset=["transaction_id"], keep="first", maintain_order=True)
    return {"rows_in": df.height, "quarantined": quarantined, "silver_rows": winners.height}
