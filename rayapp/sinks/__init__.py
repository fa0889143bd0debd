"""Serving stores as plug-ins: one module per store, each declaring ``STORE = StoreSpec(...)``.

The registry is derived from those declarations (every module of this package that has a
``STORE``), so adding a store is one new module here plus one ``<store>_url`` Settings field.
Drivers are imported lazily inside the sinks' methods: importing a store module is cheap.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rayapp.errors import ConfigError
from rayapp.sinks.base import StoreSink, StoreSpec

if TYPE_CHECKING:
    from rayapp.settings import Settings


@lru_cache(maxsize=1)
def _discover() -> tuple[StoreSpec[Any], ...]:
    found: list[StoreSpec[Any]] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        spec = getattr(importlib.import_module(f"{__name__}.{info.name}"), "STORE", None)
        if isinstance(spec, StoreSpec):
            found.append(spec)
    return tuple(sorted(found, key=lambda s: (s.order, s.name)))


def stores() -> dict[str, StoreSpec[Any]]:
    """Every store by name, in report order."""
    return {s.name: s for s in _discover()}


def store(name: str) -> StoreSpec[Any]:
    """One store's declaration.

    Raises:
        ConfigError: no such store.
    """
    known = stores()
    if name not in known:
        raise ConfigError(f"unknown store {name!r}; stores: {', '.join(known)}")
    return known[name]


def select(names: list[str] | None) -> list[StoreSpec[Any]]:
    """The named stores (all of them for None/empty), in report order."""
    if not names:
        return list(_discover())
    chosen = {store(n).name for n in names}
    return [s for s in _discover() if s.name in chosen]


def check_store_url(setting: str, url: str) -> None:
    """Whether ``url`` is one the store behind Settings field ``setting`` understands.

    Raises:
        ValueError: an unsupported scheme.
    """
    for spec in _discover():
        if spec.setting == setting:
            scheme = urlsplit(url).scheme
            if scheme not in spec.schemes:
                raise ValueError(f"unsupported scheme {scheme!r}; expected one of {', '.join(spec.schemes)}")
            return


def make_sink(settings: Settings, name: str, url: str | None = None) -> StoreSink[Any]:
    """The sink of store ``name`` at ``url`` (default: from Settings); nothing is opened yet."""
    return store(name).make(settings, url)


__all__ = ["StoreSink", "StoreSpec", "check_store_url", "make_sink", "select", "store", "stores"]
