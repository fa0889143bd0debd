"""Request and response models of the HTTP API: what ``/docs`` and ``/openapi.json`` show."""

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Optional

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, create_model

from rayapp.catalog import BUSINESS_FIELDS, UTC_US

MAX_K = 100
MAX_QUERY_CHARS = 1000
MAX_TEXTS = 256
MAX_TEXT_CHARS = 2000
MAX_TRANSACTIONS = 1000


class Error(BaseModel):
    error: str = Field(description="What went wrong, in one line.")
    details: Optional[Any] = Field(default=None, description="Per-field problems, where there are several.")


class Health(BaseModel):
    status: Literal["ok"]


# ---- datasets -------------------------------------------------------------------------------------


class DatasetSummary(BaseModel):
    name: str
    description: str
    version: Optional[int] = Field(description="Current Delta version (null: not written yet).")
    updated_at: Optional[datetime] = Field(description="Time of the latest commit.")
    rows: int
    files: int
    size_bytes: int


class DatasetList(BaseModel):
    datasets: list[DatasetSummary]


class Column(BaseModel):
    name: str
    type: str = Field(description="Arrow type.")
    nullable: bool


class VersionInfo(BaseModel):
    version: int
    timestamp: Optional[datetime]
    operation: Optional[str]
    run_id: Optional[str] = Field(description="The rayapp run that wrote this version.")
    job: Optional[str]
    run_status: Optional[str]


class DatasetDetail(BaseModel):
    name: str
    description: str
    version: int
    schema_: list[Column] = Field(alias="schema")
    partition_columns: list[str]
    date_column: str = Field(description="The column `date=` filters select on (its UTC day).")
    dates: list[str] = Field(description="Days the current snapshot's files cover.")
    versions: list[VersionInfo] = Field(description="Recent versions, newest first.")

    model_config = ConfigDict(populate_by_name=True)


class DataFile(BaseModel):
    path: str = Field(description="Path inside the table.")
    size_bytes: int
    rows: int
    partition_values: dict[str, Optional[str]] = Field(description="Values of partition columns (not stored in the file).")
    url: str = Field(description="Presigned GET URL (no API key needed) until `expires_at`.")


class FileList(BaseModel):
    name: str
    version: int = Field(description="The snapshot these files make up (immutable).")
    expires_at: Optional[datetime]
    files: list[DataFile]
    note: Optional[str] = None


# ---- search and lookups ----------------------------------------------------------------------------


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="Free text; embedded with the Embedder deployment.")
    kind: Literal["merchants", "transactions"] = "merchants"
    k: int = Field(default=10, ge=1, le=MAX_K)
    filter: Optional[dict[str, Any]] = Field(
        default=None,
        description='Pinecone-style metadata filter, e.g. {"category": "grocery", "fraud_rate": {"$gte": 0.1}}.',
    )


class SearchHit(BaseModel):
    id: str
    score: float = Field(description="Cosine similarity.")
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    kind: str
    model: str
    hits: list[SearchHit]


_ARROW_PY = {pa.string(): str, pa.bool_(): bool, pa.int64(): int, pa.float64(): float, UTC_US: datetime}


def _py(t: pa.DataType) -> Any:
    return Decimal if pa.types.is_decimal(t) else _ARROW_PY.get(t, str)


class Prediction(BaseModel):
    model_version: str
    fraud_score: float
    is_fraud_pred: bool
    scored_at: datetime


#: A transaction as the serving store holds it (silver's business columns and the latest score).
Transaction = create_model(  # type: ignore[call-overload]
    "Transaction",
    **{f.name: (Optional[_py(f.type)], None) for f in BUSINESS_FIELDS},
    _updated_at=(Optional[datetime], None),
    model_version=(Optional[str], None),
    fraud_score=(Optional[float], None),
    is_fraud_pred=(Optional[bool], None),
    scored_at=(Optional[datetime], None),
    prediction=(Optional[Prediction], None),
)


class NetworkAccount(BaseModel):
    account_id: str
    depth: int = Field(description="Hops from the account asked for (0: itself).")
    payments: int
    max_fraud_score: Optional[float]
    mean_fraud_score: Optional[float]


class NetworkLink(BaseModel):
    source: str
    target: str
    kind: Literal["device", "merchant"]
    via: str = Field(description="The shared device or merchant.")
    max_fraud_score: Optional[float] = Field(default=None, description="Riskiest payment of the target at that merchant.")


class Network(BaseModel):
    account_id: str
    depth: int
    accounts: list[NetworkAccount]
    links: list[NetworkLink]
    truncated: bool = Field(description="More links exist than `limit` allowed.")


# ---- models ---------------------------------------------------------------------------------------


class ScoreRequest(BaseModel):
    transactions: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_TRANSACTIONS,
                                               description="Contract-shaped transactions (a bare JSON list is accepted too).")


class EmbedRequest(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS)
