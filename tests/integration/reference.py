"""An independent, row-by-row implementation of the bronze -> silver -> gold rules (stdlib only).

Used to check the Ray pipeline on small inputs; shares no code with rayapp.transforms.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

CURRENCIES = {"USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF", "CNY", "INR", "BRL", "MXN", "SGD"}
TEXT_COLS = ("transaction_id", "account_id", "merchant_id", "merchant_name", "merchant_category", "currency",
             "country", "channel", "device_id", "ip_address", "status", "description")  # fmt: skip


def read_file(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))
    if path.suffix == ".jsonl":
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    rows = pq.read_table(path).to_pylist()
    for r in rows:  # typed Parquet values as the text the lake stores
        if isinstance(r.get("amount"), float):
            r["amount"] = repr(r["amount"])
        if isinstance(r.get("is_fraud"), bool):
            r["is_fraud"] = "true" if r["is_fraud"] else "false"
    return rows


def ts(v: Any) -> datetime | None:
    if v is None:
        return None
    s = str(v).strip()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?", s):
        return None
    s = s.replace("Z", "+00:00")
    try:
        d = datetime.fromisoformat(s)
    except ValueError:
        return None
    return d.replace(tzinfo=timezone.utc) if d.tzinfo is None else d.astimezone(timezone.utc)


def amount(v: Any) -> Decimal | None:
    if v is None or not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", str(v).strip()):
        return None
    try:
        d = Decimal(str(v).strip()).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        return None
    return d if Decimal(0) < d <= Decimal(1_000_000) else None


def flag(v: Any) -> bool | None:
    s = ("" if v is None else str(v)).strip().lower()
    return True if s in ("true", "1") else False if s in ("false", "0") else None


def clean(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    r = {c: (None if raw.get(c) is None else str(raw[c]).strip()) for c in TEXT_COLS}
    reasons = []
    for c in ("transaction_id", "account_id", "merchant_id"):
        if not r[c]:
            reasons.append(f"missing_{c}")
    r["amount"] = amount(raw.get("amount"))
    if r["amount"] is None:
        reasons.append("invalid_amount")
    r["currency"] = (r["currency"] or "").upper() or r["currency"]
    if r["currency"] not in CURRENCIES:
        reasons.append("invalid_currency")
    for c, allowed in (("channel", {"online", "pos", "atm", "mobile"}), ("status", {"pending", "settled", "reversed", "chargeback"})):
        r[c] = r[c].lower() if r[c] is not None else None
        if r[c] not in allowed:
            reasons.append(f"invalid_{c}")
    r["merchant_category"] = r["merchant_category"].lower() if r["merchant_category"] is not None else None
    r["event_time"], r["updated_at"] = ts(raw.get("event_time")), ts(raw.get("updated_at"))
    if r["event_time"] is None:
        reasons.append("invalid_event_time")
    if r["updated_at"] is None:
        reasons.append("invalid_updated_at")
    c = r["country"]
    r["country"] = c.upper() if c and re.fullmatch(r"[A-Za-z]{2}", c) else None
    r["is_fraud"] = flag(raw.get("is_fraud"))
    return r, reasons


def silver(batches: list[list[Path]]) -> tuple[dict[str, dict[str, Any]], set[tuple[str, int, tuple[str, ...]]]]:
    """Expected silver (by transaction id) and quarantine ((file, row, reasons)) after ingesting
    each batch of files in its own run (later runs have later ``_ingested_at``)."""
    best: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    quarantine = set()
    for run, files in enumerate(batches):
        for path in files:
            for i, raw in enumerate(read_file(path), start=1):
                row, reasons = clean(raw)
                if reasons:
                    quarantine.add((str(path), i, tuple(reasons)))
                    continue
                order = (row["updated_at"], run, str(path), i)
                cur = best.get(row["transaction_id"])
                if cur is None or order > cur[0]:
                    best[row["transaction_id"]] = (order, row)
    return {k: v for k, (_, v) in best.items()}, quarantine


def gold(rows: dict[str, dict[str, Any]]) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
    acc: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {"txn_count": 0, "total_amount": Decimal(0), "m": set(), "times": [], "fraud_count": 0})
    mer: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {"txn_count": 0, "total_amount": Decimal(0), "a": set(), "fraud_count": 0})
    for r in rows.values():
        day = r["event_time"].date().isoformat()
        a, m = acc[(r["account_id"], day)], mer[(r["merchant_id"], day)]
        for g in (a, m):
            g["txn_count"] += 1
            g["total_amount"] += r["amount"]
            g["fraud_count"] += 1 if r["is_fraud"] else 0
        a["m"].add(r["merchant_id"])
        a["times"].append(r["event_time"])
        m["a"].add(r["account_id"])
    acc_out = {k: {"txn_count": v["txn_count"], "total_amount": v["total_amount"], "distinct_merchants": len(v["m"]),
                   "first_event_time": min(v["times"]), "last_event_time": max(v["times"]), "fraud_count": v["fraud_count"]}
               for k, v in acc.items()}  # fmt: skip
    mer_out = {k: {"txn_count": v["txn_count"], "total_amount": v["total_amount"], "distinct_accounts": len(v["a"]),
                   "fraud_count": v["fraud_count"], "fraud_rate": v["fraud_count"] / v["txn_count"]}
               for k, v in mer.items()}  # fmt: skip
    return acc_out, mer_out
