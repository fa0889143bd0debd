"""Fraud features: equal to a brute-force definition, and blind to the future (no leakage)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl
import pytest

from rayapp.models.features import (
    FEATURES,
    account_features,
    all_features,
    device_features,
    merchant_features,
    prepare,
    row_features,
)

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def _rows(seed: int, n: int = 300, null_accounts: bool = False) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        t = T0 + timedelta(minutes=rnd.randint(0, 3000))
        account = None if null_accounts and rnd.random() < 0.15 else f"A{rnd.randint(0, 9)}"
        rows.append({
            "transaction_id": f"T{i}", "account_id": account, "merchant_id": f"M{rnd.randint(0, 5)}",
            "merchant_category": rnd.choice(["grocery", "crypto_exchange"]), "amount": float(rnd.randint(1, 100)),
            "country": rnd.choice(["US", "GB", None]), "channel": rnd.choice(["pos", "online", "atm"]),
            "device_id": rnd.choice([f"D{rnd.randint(0, 6)}", None, f"D{rnd.randint(0, 6)}"]),
            "event_time": t, "updated_at": t + timedelta(minutes=rnd.randint(0, 2000)), "is_fraud": rnd.random() < 0.2,
        })  # fmt: skip
    return rows


def _brute(rows: list[dict[str, Any]], r: dict[str, Any]) -> dict[str, Any]:
    before = lambda x: x["event_time"] < r["event_time"]  # noqa: E731
    prior = [x for x in rows if x["account_id"] == r["account_id"] and before(x)]
    n = len(prior)
    mean = sum(x["amount"] for x in prior) / n if n else None
    out = {
        "acct_prior_count": n, "acct_mean_amount_prior": mean, "amount_ratio": r["amount"] / mean if n else None,
        "acct_txn_1h": sum(x["event_time"] >= r["event_time"] - timedelta(hours=1) for x in prior),
        "acct_txn_24h": sum(x["event_time"] >= r["event_time"] - timedelta(hours=24) for x in prior),
        "country_share_prior": sum(x["country"] == r["country"] for x in prior) / n if n else None,
    }  # fmt: skip
    if r["device_id"]:
        dprior = [x for x in rows if x["device_id"] == r["device_id"] and before(x)]
        seen = any(x["account_id"] == r["account_id"] for x in dprior)
        out["new_device"] = 1 if (not seen and n > 0) else 0
        out["device_other_accounts"] = len({x["account_id"] for x in dprior} - {r["account_id"]})
    else:
        out["new_device"], out["device_other_accounts"] = 0, 0
    mprior = [x for x in rows if x["merchant_id"] == r["merchant_id"] and before(x)]
    known = sum(1 for x in rows if x["merchant_id"] == r["merchant_id"] and x["is_fraud"] and x["updated_at"] < r["event_time"])
    out["merchant_prior_count"] = len(mprior)
    out["merchant_fraud_rate_prior"] = known / len(mprior) if mprior else 0.0
    return out


@pytest.mark.parametrize("seed, null_accounts", [(1, False), (2, False), (3, False), (4, True)])
def test_features_match_brute_force(seed: int, null_accounts: bool) -> None:
    # null_accounts: a `missing_account_id` rule set to warn lets rows without an account into
    # silver; they are one account of their own (as in the brute force, where None == None)
    rows = _rows(seed, null_accounts=null_accounts)
    got = {r["transaction_id"]: r for r in all_features(pl.DataFrame(rows), ["grocery", "crypto_exchange"]).to_dicts()}
    assert len(got) == len(rows)
    for r in rows:
        exp, g = _brute(rows, r), got[r["transaction_id"]]
        for k, v in exp.items():
            assert g[k] == pytest.approx(v, abs=1e-9) if v is not None else g[k] is None, (r["transaction_id"], k)
        assert g["hour_of_day"] == r["event_time"].hour
        assert set(FEATURES) <= set(g)


def test_future_rows_do_not_change_past_features() -> None:
    rows = _rows(7)
    cut = T0 + timedelta(minutes=1500)
    base = all_features(pl.DataFrame(rows), ["grocery"]).filter(pl.col("event_time") < cut).sort("transaction_id")
    future = [dict(r) for r in rows if r["event_time"] >= cut]
    rnd = random.Random(0)
    for r in future:  # rewrite the future: amounts, devices, labels, order
        r.update(amount=rnd.random() * 1e4, device_id="DX", is_fraud=True, account_id=rnd.choice(["A1", "A2"]))
    rnd.shuffle(future)
    changed = [r for r in rows if r["event_time"] < cut] + future
    again = all_features(pl.DataFrame(changed), ["grocery"]).filter(pl.col("event_time") < cut).sort("transaction_id")
    assert again.select(FEATURES).equals(base.select(FEATURES))


def test_labels_count_only_once_known() -> None:
    rows = _rows(3, 20)
    for r in rows:
        r.update(merchant_id="M", is_fraud=False)
    rows[0].update(event_time=T0, updated_at=T0 + timedelta(days=10), is_fraud=True)  # chargeback arrives late
    rows[1].update(event_time=T0 + timedelta(days=1), updated_at=T0 + timedelta(days=1))
    rows[2].update(event_time=T0 + timedelta(days=11), updated_at=T0 + timedelta(days=11))
    f = {r["transaction_id"]: r for r in all_features(pl.DataFrame(rows), []).to_dicts()}
    assert f[rows[1]["transaction_id"]]["merchant_fraud_rate_prior"] == 0.0  # fraud not known yet on day 1
    assert f[rows[2]["transaction_id"]]["merchant_fraud_rate_prior"] > 0.0


def test_passes_on_key_partitions_equal_one_frame() -> None:
    # The batch job runs each pass on a key-partitioned subset; results must equal the single-frame path.
    rows = _rows(11)
    df = prepare(pl.DataFrame(rows))
    whole = all_features(df, []).sort("transaction_id")
    a = pl.concat([account_features(df.filter(pl.col("account_id").hash() % 3 == p)) for p in range(3)])
    d = pl.concat([device_features(a.filter(pl.col("device_id").hash() % 2 == p)) for p in range(2)])
    m = pl.concat([merchant_features(d.filter(pl.col("merchant_id").hash() % 4 == p)) for p in range(4)])
    got = row_features(m, []).sort("transaction_id")
    assert got.select(FEATURES).equals(whole.select(FEATURES))
