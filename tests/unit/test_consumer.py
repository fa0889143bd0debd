"""The consumer API's pure parts: vector filters, request body limits, URL signatures, key scopes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayapp.catalog import Dataset
from rayapp.consumer import signing
from rayapp.consumer.keys import Scope, parse_scopes
from rayapp.consumer.limits import MAX_DEPTH, MAX_STRING, check_json
from rayapp.errors import ConfigError
from rayapp.sinks.vector_filter import FilterError, check, to_sql

M = Dataset.MERCHANT_VECTORS


@pytest.mark.parametrize(
    ("flt", "sql"),
    [
        ({"category": "fuel"}, "(category = 'fuel')"),
        ({"name": "O'Brien's"}, "(name = 'O''Brien''s')"),
        ({"fraud_rate": {"$gte": 0.1, "$lt": 0.5}}, "(fraud_rate >= 0.1 AND fraud_rate < 0.5)"),
        ({"country": {"$in": ["DE", "FR"]}, "txn_count": {"$ne": 3}}, "(country IN ('DE', 'FR') AND txn_count != 3)"),
        ({"country": {"$nin": ["DE"]}}, "(country NOT IN ('DE'))"),
        ({"$or": [{"category": "fuel"}, {"fraud_count": {"$gt": 2}}]}, "(((category = 'fuel') OR (fraud_count > 2)))"),
    ],
)
def test_filters_translate_to_lance_sql(flt: dict, sql: str) -> None:
    assert check(M, flt) == flt
    assert to_sql(flt) == sql


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        ({"owner": "me"}, "cannot filter on 'owner'"),
        ({"category": {"$gt": "a"}}, "needs a numeric field"),
        ({"txn_count": "ten"}, "expected a number"),
        ({"txn_count": True}, "expected a number"),
        ({"category": {"$regex": "f.*"}}, "unknown operator"),
        ({"$not": {"category": "fuel"}}, "unknown operator"),
        ({"country": {"$in": []}}, "list of 1 to"),
        ({"category": "x'; DROP TABLE merchants; --" * 20}, "at most 256"),
        ({"$and": [{"$and": [{"$and": [{"$and": [{"category": "a"}]}]}]}]}, "nest at most"),
        ({"category": {}}, "empty condition"),
    ],
)
def test_bad_filters_are_refused_with_the_reason(flt: dict, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        check(M, flt)


def test_transaction_filters_have_their_own_fields() -> None:
    assert check(Dataset.TRANSACTION_VECTORS, {"fraud_score": {"$gte": 0.9}, "account_id": "ACC1"})
    with pytest.raises(FilterError):
        check(Dataset.TRANSACTION_VECTORS, {"category": "fuel"})


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_json_limits() -> None:
    assert check_json(_nested(MAX_DEPTH)) is None
    assert "nested too deep" in (check_json(_nested(MAX_DEPTH + 1)) or "")
    assert "nested too deep" in (check_json(_nested(100_000)) or "")  # beyond the parser's recursion limit
    assert "longer than" in (check_json(json.dumps({"a": "x" * (MAX_STRING + 1)}).encode()) or "")
    assert "longer than" in (check_json(json.dumps({"x" * (MAX_STRING + 1): 1}).encode()) or "")
    assert check_json(b"{not json") is None  # the route says what is wrong with it
    assert check_json(b"") is None


@given(st.recursive(st.none() | st.integers() | st.text(max_size=20), lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=30))
def test_json_depth_matches_an_independent_count(doc: object) -> None:
    def depth(x: object) -> int:
        if isinstance(x, list):
            return 1 + max((depth(v) for v in x), default=0)
        if isinstance(x, dict):
            return 1 + max((depth(v) for v in x.values()), default=0)
        return 0

    refused = check_json(json.dumps(doc).encode())
    assert (refused is not None) == (depth(doc) > MAX_DEPTH)


def test_signatures_name_one_path_and_expire() -> None:
    key = b"k" * 44
    expires, sig = signing.sign(key, "gold/a.parquet", 60, now=1000)
    assert expires == 1060
    signing.check(key, "gold/a.parquet", expires, sig, now=1059)
    with pytest.raises(signing.BadSignature, match="expired"):
        signing.check(key, "gold/a.parquet", expires, sig, now=1061)
    with pytest.raises(signing.BadSignature, match="does not match"):
        signing.check(key, "gold/b.parquet", expires, sig, now=1000)
    with pytest.raises(signing.BadSignature, match="does not match"):
        signing.check(key, "gold/a.parquet", expires + 3600, sig, now=1000)  # a longer life is a different URL
    with pytest.raises(signing.BadSignature, match="does not match"):
        signing.check(b"other" * 9, "gold/a.parquet", expires, sig, now=1000)


def test_signing_key_is_made_once_per_lake(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from rayapp.settings import load_settings

    s = load_settings(overrides={"data_dir": str(tmp_path)})
    first = signing.signing_key(s)
    assert signing.signing_key(s) == first and len(first) == 44
    assert (tmp_path / "lake" / "_system" / "signing.key").stat().st_mode & 0o777 == 0o600
    configured = load_settings(overrides={"data_dir": str(tmp_path), "api_signing_key": "from-a-secret"})
    assert signing.signing_key(configured) == b"from-a-secret"


def test_scopes_parse_strictly() -> None:
    assert parse_scopes("search, datasets:read") == (Scope.DATASETS_READ, Scope.SEARCH)
    with pytest.raises(ConfigError, match="unknown scope 'admin'"):
        parse_scopes("search,admin")
    with pytest.raises(ConfigError, match="at least one"):
        parse_scopes(" , ")


def test_keys_off_only_on_loopback() -> None:
    from rayapp.settings import load_settings

    assert load_settings(overrides={"api_auth": False}).api_auth is False
    with pytest.raises(ConfigError, match="RAYAPP_API_AUTH.*not loopback"):
        load_settings(overrides={"api_auth": False, "serve_host": "0.0.0.0"})


# ---- REST API sources: the client's pure parts ------------------------------------------------------


def test_pages_are_read_as_declared() -> None:
    from rayapp.settings import ApiSource
    from rayapp.sources.api import MalformedPage, Position, _page

    src = ApiSource(url="http://api.test/tx", items="result.rows", next_cursor="meta.next", page_size=2)
    body = {"result": {"rows": [{"id": 1, "updated_at": "2025-01-02"}, {"id": 2, "updated_at": "2025-01-03"}]}, "meta": {"next": "c2"}}
    page = _page(src, Position(since="2025-01-01"), json.dumps(body).encode(), "GET /tx")
    assert [r["id"] for r in page.rows] == [1, 2] and page.after.cursor == "c2" and page.after.seq == 1 and not page.after.done
    assert page.after.high == "2025-01-03" and page.after.since == "2025-01-01"
    again = _page(src, page.after, json.dumps(body).encode(), "GET /tx")
    assert again.repeated and again.after == page.after  # the same rows again: nothing moves
    last = _page(src, page.after, json.dumps({"result": {"rows": []}, "meta": {"next": None}}).encode(), "GET /tx")
    assert last.after.done and last.after.next_traversal().since == "2025-01-03"
    with pytest.raises(MalformedPage, match="not JSON"):
        _page(src, Position(), b'{"result": {"rows": [', "GET /tx")
    with pytest.raises(MalformedPage, match="no list of objects at 'result.rows'"):
        _page(src, Position(), b'{"result": {"rows": {"id": 1}}}', "GET /tx")
    with pytest.raises(MalformedPage, match="same cursor"):
        _page(src, Position(cursor="c2"), json.dumps({"result": {"rows": [{"id": 9}]}, "meta": {"next": "c2"}}).encode(), "GET /tx")


def test_retry_after_and_rate_limit() -> None:
    from rayapp.sources.api import RateLimiter, _retry_after

    assert _retry_after("3") == 3.0 and _retry_after("999") == 120.0 and _retry_after("soon") is None and _retry_after(None) is None
    now = [100.0]
    slept: list[float] = []
    limiter = RateLimiter(4, clock=lambda: now[0], sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)))
    for _ in range(3):
        limiter.wait()
    assert slept == pytest.approx([0.25, 0.25])
