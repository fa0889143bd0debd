"""The store registry is derived from the plug-in modules' declarations."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import rayapp.sinks as sinks_pkg
from rayapp.catalog import Dataset
from rayapp.errors import ConfigError
from rayapp.settings import Settings, load_settings
from rayapp.sinks import select, store, stores
from rayapp.sinks.base import StoreSpec


def test_registry_is_every_module_that_declares_a_store() -> None:
    declared = {}
    for info in pkgutil.iter_modules(sinks_pkg.__path__):
        spec = getattr(importlib.import_module(f"rayapp.sinks.{info.name}"), "STORE", None)
        if isinstance(spec, StoreSpec):
            declared[spec.name] = spec
    assert list(stores()) == ["postgres", "clickhouse", "graph", "vector"]  # report order
    assert stores() == declared


@pytest.mark.parametrize("name", ["postgres", "clickhouse", "graph", "vector"])
def test_each_store_names_a_settings_field_and_an_embedded_default(name: str, tmp_path: Path) -> None:
    spec = store(name)
    assert spec.setting in Settings.model_fields
    s = load_settings(overrides={"data_dir": str(tmp_path)})
    url = spec.url(s)
    assert url == f"{spec.embedded_schemes[0]}://{tmp_path / spec.default_dir}"
    assert spec.is_embedded(url)
    # pgserver is a PostgreSQL server process: a pool of writers connects to it; the other engines
    # live in files one writer process owns
    assert spec.single_writer(url) == (name != "postgres")
    assert set(spec.embedded_schemes) <= set(spec.schemes)
    assert spec.datasets and all(isinstance(d, Dataset) for d in spec.datasets)
    assert isinstance(spec.make(s), spec.sink)


def test_publish_and_replay_offer_exactly_the_registered_stores() -> None:
    from jobs import publish, replay_dlq

    for job in (publish.SPEC, replay_dlq.SPEC):
        action = next(a for a in job.parser()._actions if a.dest == "store")
        assert list(action.choices) == list(stores())


def test_unknown_store_and_bad_scheme_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="unknown store 'mongo'"):
        select(["mongo"])
    with pytest.raises(ConfigError, match=r"RAYAPP_GRAPH_URL: .*unsupported scheme 'http'"):
        load_settings(overrides={"graph_url": "http://x"})
    assert [s.name for s in select(["vector", "postgres"])] == ["postgres", "vector"]


def test_batch_sizes_come_from_each_stores_options() -> None:
    s = load_settings(overrides={"writer_batch_rows": 123, "graph_batch_rows": 456, "graph_bulk_batch_rows": 789})
    # embedded Ladybug bulk-loads: fewer, larger COPYs; row statements (or a Bolt server) take graph_batch_rows
    assert {n: spec.batch_rows(s) for n, spec in stores().items()} == {"postgres": 123, "clickhouse": 123, "graph": 789, "vector": 123}
    assert store("graph").batch_rows(s.model_copy(update={"graph_bulk_copy": False})) == 456
    assert store("graph").batch_rows(load_settings(overrides={"graph_url": "neo4j://h:7687", "graph_batch_rows": 456})) == 456
