"""The benchmark job's scale mode: the lake stages with peak memory, disk and spill, nothing left behind.

Times are never asserted (they are measured by the job, reported in its JSON); what is asserted is
that the report is complete and true: row counts, memory observed, sizes on disk, staging cleaned.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rayapp.catalog import SILVER
from rayapp.lake import Lake
from rayapp.tools.bench import LANDING_TO_POSTGRES, StageTiming, _landing_to_postgres

pytestmark = pytest.mark.integration


def test_lake_only_benchmark_reports_memory_and_disk(ray_local: None, settings: Any) -> None:
    from jobs.benchmark import entrypoint

    assert entrypoint(["--data-dir", str(settings.data_dir), "--rows", "20000", "--files", "2", "--lake-only", "--keep"]) == 0
    [path] = (Path(settings.data_dir) / "bench").glob("benchmark-*.json")
    report = json.loads(path.read_text())
    stages = {s["stage"]: s for s in report["stages"]}
    assert list(stages) == ["generate", "ingest", "bronze_to_silver", "silver_to_gold"]  # no reference, models or stores
    assert stages["generate"]["rows"] == 20000 and stages["ingest"]["rows"] == 20000
    kept = Lake(settings.model_copy(update={"lake_uri": str(Path(settings.data_dir) / "bench" / "work" / "lake")}))
    assert stages["bronze_to_silver"]["silver_rows"] == kept.open(SILVER).count() > 0
    mem = report["memory"]
    assert 0 < mem["driver_peak_rss_mib"] < mem["processes_peak_pss_mib"] and mem["processes_at_peak"] >= 3  # driver, GCS, raylet, workers
    assert mem["samples"] >= 1 and mem["disk_peak_growth_mib"] >= 0 and mem["spill_left_bytes"] >= 0
    disk = report["disk_mib"]
    assert disk["landing"] > 0 and disk["bronze/transactions"] > 0 and disk["silver/transactions"] > 0 and disk["staging_left"] == 0
    assert report["landing_to_postgres"] is None  # publish was not part of a lake-only run


def test_landing_to_postgres_total_and_shares() -> None:
    secs = dict(zip(LANDING_TO_POSTGRES, (2.0, 3.0, 1.0, 4.0, 10.0)))
    by = {s: StageTiming(s, 1, v) for s, v in secs.items()} | {"generate": StageTiming("generate", 1, 99.0)}
    path = _landing_to_postgres(by, 1_000_000)
    assert path == {"seconds": 20.0, "landing_rows_per_s": 50_000,
                    "shares": {"ingest": 0.1, "bronze_to_silver": 0.15, "silver_to_gold": 0.05, "score_inline": 0.2, "publish_postgres": 0.5}}  # fmt: skip
    del by["publish_postgres"]
    assert _landing_to_postgres(by, 1_000_000) is None
