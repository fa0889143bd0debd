"""Serving-store sinks, one module per store; the store URL picks the backend."""

from __future__ import annotations

from urllib.parse import urlsplit

from rayapp.errors import ConfigError
from rayapp.sinks.base import Dataset, SinkOptions, StoreSink

#: Store name (as in ``Settings.store_url``) -> "module:Class", imported lazily.
STORES: dict[str, str] = {
    "postgres": "rayapp.sinks.postgres:PostgresSink",
    "clickhouse": "rayapp.sinks.clickhouse:ClickHouseSink",
    "graph": "rayapp.sinks.graph:GraphSink",
    "vector": "rayapp.sinks.vectors:VectorSink",
}


def sink_class(store: str) -> type[StoreSink]:
    import importlib

    if store not in STORES:
        raise ConfigError(f"unknown store {store!r}; stores: {', '.join(STORES)}")
    module, cls = STORES[store].split(":")
    return getattr(importlib.import_module(module), cls)


def make_sink(store: str, url: str, options: SinkOptions | None = None) -> StoreSink:
    """The sink for ``store`` at ``url`` (nothing is opened until ``on_write_start``)."""
    return sink_class(store)(url, options)


def is_embedded(url: str) -> bool:
    """Whether the URL names an engine living in a local directory (one writer process)."""
    return urlsplit(url).scheme in ("chdb", "ladybug", "lancedb", "pgserver")


__all__ = ["Dataset", "SinkOptions", "StoreSink", "STORES", "make_sink", "sink_class", "is_embedded"]
