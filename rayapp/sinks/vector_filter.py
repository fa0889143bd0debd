"""Metadata filters for vector search, in Pinecone's filter language, checked before any store sees them.

``{"category": "grocery", "fraud_rate": {"$gte": 0.1}, "$or": [{"country": "DE"}, {"country": "FR"}]}``:
fields are ANDed; operators ``$eq $ne $in $nin`` on any filterable field, ``$gt $gte $lt $lte``
on numeric ones (as Pinecone allows); ``$and``/``$or`` take lists. The same filter goes to
Pinecone as is and to LanceDB as a SQL ``WHERE`` built here from the checked parts.
"""

from __future__ import annotations

from typing import Any

from rayapp.catalog import Dataset

STRING, NUMBER = "string", "number"
#: What each collection can be filtered on.
FILTERABLE: dict[Dataset, dict[str, str]] = {
    Dataset.MERCHANT_VECTORS: {"name": STRING, "category": STRING, "country": STRING, "txn_count": NUMBER, "fraud_count": NUMBER,
                               "fraud_rate": NUMBER},
    Dataset.TRANSACTION_VECTORS: {"account_id": STRING, "merchant_id": STRING, "model_version": STRING, "amount": NUMBER,
                                  "fraud_score": NUMBER},
}  # fmt: skip
_COMPARE = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_RANGE = {"$gt", "$gte", "$lt", "$lte"}
MAX_TERMS = 32
MAX_IN = 100
MAX_DEPTH = 4


class FilterError(ValueError):
    """A filter the stores would reject or misread; the message says which part."""


def check(dataset: Dataset, flt: dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate ``flt`` for ``dataset``'s collection; returns it unchanged (None for no filter).

    Raises:
        FilterError: unknown field or operator, a range on a text field, a value of the wrong kind, too large.
    """
    if not flt:
        return None
    terms = [0]
    _check_node(FILTERABLE[dataset], flt, terms, 1)
    return flt


def _check_node(fields: dict[str, str], node: Any, terms: list[int], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise FilterError(f"filters nest at most {MAX_DEPTH} levels")
    if not isinstance(node, dict) or not node:
        raise FilterError("a filter is a non-empty JSON object")
    for key, value in node.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise FilterError(f"{key} takes a non-empty list of filters")
            for sub in value:
                _check_node(fields, sub, terms, depth + 1)
            continue
        if key.startswith("$"):
            raise FilterError(f"unknown operator {key!r} at the top of a filter (use $and or $or)")
        if key not in fields:
            raise FilterError(f"cannot filter on {key!r}; fields: {', '.join(fields)}")
        ops = value if isinstance(value, dict) else {"$eq": value}
        if not ops:
            raise FilterError(f"{key}: empty condition")
        for op, arg in ops.items():
            terms[0] += 1
            if terms[0] > MAX_TERMS:
                raise FilterError(f"a filter has at most {MAX_TERMS} conditions")
            if op in ("$in", "$nin"):
                if not isinstance(arg, list) or not arg or len(arg) > MAX_IN:
                    raise FilterError(f"{key}: {op} takes a list of 1 to {MAX_IN} values")
                for a in arg:
                    _check_value(key, fields[key], a)
            elif op in _COMPARE:
                if op in _RANGE and fields[key] != NUMBER:
                    raise FilterError(f"{key}: {op} needs a numeric field")
                _check_value(key, fields[key], arg)
            else:
                raise FilterError(f"{key}: unknown operator {op!r}; operators: {', '.join([*_COMPARE, '$in', '$nin'])}")


def _check_value(key: str, kind: str, value: Any) -> None:
    ok = isinstance(value, str) if kind == STRING else isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise FilterError(f"{key}: expected a {kind}, got {type(value).__name__}")
    if isinstance(value, str) and len(value) > 256:
        raise FilterError(f"{key}: values are at most 256 characters")


def to_sql(flt: dict[str, Any] | None) -> str | None:
    """The checked filter as a LanceDB (DataFusion SQL) ``WHERE`` clause."""
    if not flt:
        return None
    return _sql_node(flt)


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def _sql_node(node: dict[str, Any]) -> str:
    parts = []
    for key, value in node.items():
        if key in ("$and", "$or"):
            joiner = " AND " if key == "$and" else " OR "
            parts.append("(" + joiner.join(_sql_node(sub) for sub in value) + ")")
            continue
        ops = value if isinstance(value, dict) else {"$eq": value}
        for op, arg in ops.items():
            if op in ("$in", "$nin"):
                neg = "NOT " if op == "$nin" else ""
                parts.append(f"{key} {neg}IN ({', '.join(_literal(a) for a in arg)})")
            else:
                parts.append(f"{key} {_COMPARE[op]} {_literal(arg)}")
    return "(" + " AND ".join(parts) + ")"
