"""Synthetic landing data, generated in parallel Ray tasks (one per file)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rayapp.lake import Lake
from rayapp.tools.datagen import GenSpec, entities, generate_table
from rayapp.tools.datagen_values import encode
from rayapp.urls import join_uri

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneratedFile:
    uri: str
    rows: int
    bytes: int


def _write_file(lake: Lake, spec: GenSpec, out_uri: str, f: int) -> GeneratedFile:
    table = generate_table(spec, f, entities(spec))
    data = encode(table, spec.file_format(f))
    uri = join_uri(out_uri, spec.file_name(f))
    fs, path = lake.fsspec(uri)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{spec.file_name(f)}.tmp"
    with fs.open(tmp if not uri.startswith("s3") else path, "wb") as fh:
        fh.write(data)
    if not uri.startswith("s3"):
        fs.mv(tmp, path)  # readers never see a half-written local file
    return GeneratedFile(uri, table.num_rows, len(data))


def generate(lake: Lake, spec: GenSpec, out_uri: str) -> list[GeneratedFile]:
    """Write ``spec.n_files`` landing files under ``out_uri`` using one Ray task per file."""
    import ray

    lake.check_reachable(out_uri)
    task = ray.remote(num_cpus=1, max_retries=2)(_write_file)
    lake_ref = ray.put(lake)
    refs = [task.remote(lake_ref, spec, out_uri, f) for f in range(spec.n_files)]
    files = ray.get(refs)
    logger.info("generated %d rows in %d file(s) under %s", sum(f.rows for f in files), len(files), out_uri)
    return files
