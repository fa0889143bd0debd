"""``rayapp demo``: generate data, run the stages built so far on embedded defaults, show where it all is."""

from __future__ import annotations

from typing import Callable

from rayapp.errors import RayappError

JobEntry = tuple[Callable[[list[str]], int], str]

#: Stages the demo runs after `generate`, in order, when the job exists.
DEMO_STAGES = ("ingest",)


def run_demo(rows: int, seed: int, files: int, global_args: list[str], jobs: dict[str, JobEntry]) -> int:
    """Run generate + every demo stage in one process (one Ray instance) and print a guide."""
    if rows < 1:
        raise RayappError("demo: --rows must be ≥ 1")
    steps: list[tuple[str, list[str]]] = [("generate", ["--rows", str(rows), "--seed", str(seed), "--files", str(files)])]
    steps += [(name, []) for name in DEMO_STAGES if name in jobs]
    for name, extra in steps:
        print(f"\n== {name} ==", flush=True)
        code = jobs[name][0](global_args + extra)
        if code != 0:
            print(f"\ndemo stopped: {name} exited with {code}")
            return code
    _print_guide(global_args)
    return 0


def _print_guide(global_args: list[str]) -> None:
    from rayapp.jobkit import JobArgumentParser, settings_from_args
    from rayapp.pipelines.ingest import bronze_uri

    p = JobArgumentParser(prog="rayapp demo")
    p.add_argument("--config")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--data-dir")
    p.add_argument("--lake-uri")
    settings = settings_from_args(p.parse_args(global_args))
    bronze = bronze_uri(settings)
    print(
        f"""
== where everything is ==
landing files   {settings.landing}
bronze table    {bronze}
run ledger      {settings.table_uri('_ledger', 'runs')} (and _ledger/files)

== look at it ==
rayapp runs                                   # every run, newest first
python -c "import polars as pl; print(pl.read_delta('{bronze}').head())"
python -c "from deltalake import DeltaTable as T; t=T('{bronze}'); print(t.version(), t.count())"
rayapp run ingest                             # again: ingests nothing (idempotent)"""
    )
