"""Landing bytes -> bronze rows: faithful text, extras in _extra, clear rejections."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayapp.errors import FileRejectedError
from rayapp.catalog import BRONZE_SCHEMA, CONTRACT_COLUMNS
from rayapp.transforms.raw import detect_format, parse_landing, to_bronze

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=timezone.utc)


def bronze(data: bytes, fmt: str) -> list[dict]:
    t = to_bronze(parse_landing(data, fmt), batch_id="run-1", ingested_at=NOW, source_file="s3://b/f", source_system="landing")
    assert t.schema == BRONZE_SCHEMA
    return t.to_pylist()


def test_csv_keeps_raw_text_and_row_numbers() -> None:
    data = (
        "transaction_id,amount,event_time,is_fraud,description\n"
        ' T1 ,007.50,2025-01-01T00:00:00+02:00,,"hello, ""world"""\n'
        "T2,abc,not a date,1,\"multi\nline\"\n"
    ).encode()
    rows = bronze(data, "csv")
    assert [r["_source_row"] for r in rows] == [1, 2]
    assert rows[0]["transaction_id"] == " T1 "  # bronze keeps the text as it arrived
    assert rows[0]["amount"] == "007.50"
    assert rows[0]["is_fraud"] == ""
    assert rows[0]["description"] == 'hello, "world"'
    assert rows[1]["description"] == "multi\nline"
    assert rows[1]["amount"] == "abc"
    assert rows[0]["merchant_id"] is None  # column absent from the file
    assert rows[0]["_extra"] is None
    assert rows[0]["_batch_id"] == "run-1" and rows[0]["_ingested_at"] == NOW


def test_unknown_columns_preserved_as_json() -> None:
    tricky = 'quote " back \\ tab \t nl \n é'
    buf = io.StringIO()
    import csv

    w = csv.writer(buf)
    w.writerow(["transaction_id", "Loyalty Tier", "zz"])
    w.writerow(["T1", tricky, ""])
    rows = bronze(buf.getvalue().encode(), "csv")
    assert json.loads(rows[0]["_extra"]) == {"Loyalty Tier": tricky, "zz": ""}


def test_header_matching_is_trim_and_case_insensitive() -> None:
    rows = bronze(b" Transaction_ID ,AMOUNT\nT1,5\n", "csv")
    assert rows[0]["transaction_id"] == "T1" and rows[0]["amount"] == "5"


def test_jsonl_typed_values_become_text() -> None:
    data = b'{"transaction_id": 17, "amount": 12.5, "is_fraud": true, "meta": {"a": [1, 2]}}\n' \
           b'{"transaction_id": "T2", "amount": "9.99", "is_fraud": "", "meta": null, "n": 3}\n'
    rows = bronze(data, "jsonl")
    assert [r["transaction_id"] for r in rows] == ["17", "T2"]
    assert [r["amount"] for r in rows] == ["12.5", "9.99"]
    assert [r["is_fraud"] for r in rows] == ["true", ""]
    assert json.loads(rows[0]["_extra"]) == {"meta": {"a": [1, 2]}, "n": None}
    assert json.loads(rows[1]["_extra"]) == {"meta": None, "n": 3}


# Payloads on which the one-pass JSON reader must give exactly what full type inference gives,
# whether it takes them or hands them on.
JSONL_CASES = {
    "all text": b'{"transaction_id":"T1","amount":"5.50","event_time":"2025-01-04T18:00:00"}\n'
    b'{"transaction_id":"T2","amount":"","promo_code":"X","tier":"gold"}\n',
    "text extras, int and bool": b'{"transaction_id":"T1","n":1,"ok":true}\n{"transaction_id":"T2","n":null,"ok":false}\n',
    "timestamp-like extra": b'{"transaction_id":"T1","seen":"2025-01-04 18:00:00"}\n',
    "integer beyond 64 bits": b'{"transaction_id":"T1","big":12345678901234567890}\n',
    "number in a contract column": b'{"transaction_id":"T1","amount":5.50}\n{"transaction_id":"T2","amount":"x"}\n',
    "float extra": b'{"transaction_id":"T1","score":1}\n{"transaction_id":"T2","score":2.5}\n',
    "nested extra": b'{"transaction_id":"T1","meta":{"a":[1,2]}}\n',
    "contract name in capitals": b'{"Transaction_ID":"T1","amount":"3"}\n',
    "key given twice": b'{"transaction_id":"T1","amount":"1","amount":"2"}\n',
    "key only in a late line": b'{"transaction_id":"T1"}\n' * 3 + b'{"transaction_id":"T4","late":"x"}\n',
    "blank lines and CRLF": b'{"transaction_id":"T1"}\r\n\r\n{"transaction_id":"T2","note":"a\\u0000b"}\r\n',
}


@pytest.mark.parametrize("name", list(JSONL_CASES))
def test_jsonl_one_pass_reader_agrees_with_full_inference(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from rayapp.transforms import raw

    def outcome() -> list[dict] | str:
        try:
            return bronze(JSONL_CASES[name], "jsonl")
        except FileRejectedError as exc:
            return str(exc)

    fast = outcome()
    monkeypatch.setattr(raw, "_read_jsonl_text", lambda payload: None)
    assert fast == outcome()


def test_jsonl_one_pass_reader_takes_only_text_it_reads_like_full_inference() -> None:
    from rayapp.transforms.raw import _read_jsonl_text

    taken = {name for name, data in JSONL_CASES.items() if _read_jsonl_text(data) is not None}
    assert taken == {"all text", "text extras, int and bool", "key only in a late line", "blank lines and CRLF"}
    rows = bronze(JSONL_CASES["all text"], "jsonl")
    assert [(r["transaction_id"], r["amount"], r["event_time"], r["merchant_id"]) for r in rows] == [
        ("T1", "5.50", "2025-01-04T18:00:00", None),
        ("T2", "", None, None),
    ]
    assert rows[0]["_extra"] == '{"promo_code":null,"tier":null}'
    assert json.loads(rows[1]["_extra"]) == {"promo_code": "X", "tier": "gold"}
    assert _read_jsonl_text(b'{"merchant":"M1"}\n') is None  # no contract values: the full reader rejects it
    with pytest.raises(FileRejectedError, match="no contract columns"):
        parse_landing(b'{"merchant":"M1"}\n', "jsonl")


def test_parquet_typed_columns_become_text() -> None:
    t = pa.table({
        "transaction_id": ["T1", "T2"],
        "amount": pa.array([12.5, None], pa.float64()),
        "is_fraud": pa.array([False, None]),
        "event_time": pa.array([datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc), None], pa.timestamp("us", tz="UTC")),
        "card_bin": pa.array([411111, 522222], pa.int64()),
    })  # fmt: skip
    buf = io.BytesIO()
    pq.write_table(t, buf)
    rows = bronze(buf.getvalue(), "parquet")
    assert rows[0]["amount"] == "12.5" and rows[1]["amount"] is None
    assert rows[0]["is_fraud"] == "false" and rows[1]["is_fraud"] is None
    assert rows[0]["event_time"].startswith("2025-01-02T03:04:05") and rows[0]["event_time"].endswith("Z")
    assert json.loads(rows[1]["_extra"]) == {"card_bin": 522222}


@pytest.mark.parametrize(
    ("data", "fmt", "reason"),
    [
        (b"", "csv", "empty file"),
        (b"\xff\xfe\x00garbage\x01", "csv", "not UTF-8"),
        (b"a,b\n1,2\n", "csv", "no contract columns"),
        (b"transaction_id,amount\nT1,1,extra\n", "csv", "CSV parse error at a row: 3 of 2 columns"),
        (b"transaction_id,amount\nSECRET-ROW,1\nT1\nT2,3\n", "csv", r"^CSV parse error at a row: 1 of 2 columns$"),  # not at the end
        (b"transaction_id,transaction_id\nT1,T2\n", "csv", "duplicate"),
        (b'{"transaction_id": "T1"}\n{not json\n{"transaction_id": "T2"}\n', "jsonl", r"^JSON Lines parse error at line 2: Expecting property name"),
        (b"PAR1 definitely not parquet", "parquet", "Parquet read error"),
    ],
)
def test_unparseable_files_rejected_with_reason(data: bytes, fmt: str, reason: str) -> None:
    with pytest.raises(FileRejectedError, match=reason):
        parse_landing(data, fmt)


def test_rejection_reasons_never_quote_row_content() -> None:
    secret = b"4111111111111111"
    for data, fmt in (
        (b"transaction_id,amount\nT1," + secret + b",x\nT2,1\n", "csv"),
        (b'{"transaction_id": "' + secret + b'"\n{"transaction_id": "T2"}\n', "jsonl"),
    ):
        with pytest.raises(FileRejectedError) as exc:
            parse_landing(data, fmt)
        message = str(exc.value)
        assert secret.decode() not in message and ("line" in message or "row" in message)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_truncated_file_keeps_its_complete_rows_and_marks_the_broken_tail(fmt: str) -> None:
    header = ",".join(CONTRACT_COLUMNS)
    complete = [f"T{i},A1,M1,Shop,grocery,1{i}.00,USD,US,pos,D1,10.0.0.1,settled,x,false,2025-01-01T00:00:00Z,2025-01-01T00:00:00Z"
                for i in range(3)]  # fmt: skip
    if fmt == "csv":
        data = (header + "\n" + "\n".join(complete) + "\nT9,A1,M1,Sho").encode()  # cut mid-row
    else:
        rows = [json.dumps(dict(zip(CONTRACT_COLUMNS, line.split(",")))) for line in complete]
        data = ("\n".join(rows) + '\n{"transaction_id": "T9", "acc').encode()
    parsed = parse_landing(data, fmt)
    assert parsed.note is not None and "kept 3 complete row(s)" in parsed.note and "truncated last" in parsed.note
    assert "Sho" not in parsed.note and "acc" not in parsed.note  # the note names the line, not its content
    rows = bronze(data, fmt)
    assert [r["transaction_id"] for r in rows[:3]] == ["T0", "T1", "T2"]
    assert all(json.loads(r["_extra"]) == {"_malformed": None} for r in rows[:3])
    tail = json.loads(rows[3]["_extra"])
    assert tail["_malformed"].startswith("truncated last")
    if fmt == "csv":
        assert rows[3]["transaction_id"] == "T9" and rows[3]["merchant_name"] == "Sho" and rows[3]["amount"] is None


def test_header_only_csv_is_empty_not_rejected() -> None:
    assert bronze(",".join(CONTRACT_COLUMNS).encode() + b"\n", "csv") == []


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a/b.csv", "csv"), ("x.JSONL", "jsonl"), ("x.ndjson", "jsonl"), ("x.parquet", "parquet"), ("x.txt", None)],
)
def test_detect_format(name: str, fmt: str | None) -> None:
    assert detect_format(name) == fmt
