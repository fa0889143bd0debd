"""Publish: fan what changed in the lake out to the serving stores through writer actors.

``writers`` (actors, retries, dead letters, fan-out) · ``routing`` (datasets to the stores that
declare them) · ``changes`` (per-store watermarks, what changed) · ``readers`` (lake rows shaped as
datasets) · ``embedding`` (vectors) · ``run`` (publish, replay, store counts) · ``backfill``
(rebuild the graph or vectors from ClickHouse).
"""

from __future__ import annotations

from rayapp.publish.run import PublishResult, publish, replay_dead_letters, store_counts

__all__ = ["PublishResult", "publish", "replay_dead_letters", "store_counts"]
