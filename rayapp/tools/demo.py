"""``rayapp demo``: generate data, run the stages built so far on embedded defaults, show where it all is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rayapp.catalog import BRONZE, GOLD_ACCOUNT, GOLD_MERCHANT, PREDICTIONS, QUARANTINE, SILVER
from rayapp.errors import RayappError
from rayapp.lake import Lake
from rayapp.ledger import Ledger

if TYPE_CHECKING:
    from rayapp.jobkit import Job
    from rayapp.settings import Settings

#: Stages the demo runs after `generate` when there is no `pipeline` job.
DEMO_STAGES = ("ingest", "bronze_to_silver", "silver_to_gold", "train_fraud_model", "score_transactions", "publish")


def run_demo(settings: Settings, rows: int, seed: int, files: int, jobs: dict[str, Job]) -> int:
    """Run generate + every demo stage in one process (one Ray instance) with one Settings, and print a guide."""
    if rows < 1:
        raise RayappError("demo: --rows must be ≥ 1")
    from rayapp.logs import is_terminal

    if is_terminal() and "log_level" not in settings.model_fields_set:
        # Watched on a terminal: each stage says what it did; warnings and errors still show.
        settings = settings.model_copy(update={"log_level": "WARNING"})
    steps: list[tuple[str, dict[str, object]]] = [("generate", {"rows": rows, "seed": seed, "files": files})]
    if "pipeline" in jobs:
        steps.append(("pipeline", {"verify": "reconcile" in jobs}))
    else:
        steps += [(name, {}) for name in DEMO_STAGES if name in jobs]
    print(f"rayapp demo: {rows:,} generated transactions -> landing files -> bronze -> silver -> gold -> fraud model -> scores"
          f" -> PostgreSQL, ClickHouse, graph, vectors; then a check that every store equals the lake\ndata dir {settings.data_dir}",
          flush=True)  # fmt: skip
    for name, options in steps:
        if name != "pipeline":  # the pipeline announces each of its stages
            print(f"\n==> {name}", flush=True)
        code = jobs[name].execute(settings, jobs[name].options(**options))
        if code != 0:
            print(f"\ndemo stopped: {name} exited with {code}")
            return code
    _print_guide(settings)
    _print_api(settings)
    from rayapp.report import write_report

    path = write_report(Lake(settings), str(settings.data_dir / "report.html"))
    print(f"\n== run report ==\n{path}\nopen it in a browser (no network needed); `rayapp report` makes a fresh one, "
          f"`rayapp serve` shows it at http://127.0.0.1:{settings.serve_port}/ui (user: anything, password: the API key)")
    return 0


def _print_api(settings: Settings) -> None:
    """A key for the HTTP API (all scopes), and how to use it."""
    from datetime import datetime, timezone

    from rayapp.consumer.keys import KeyStore, Scope

    name = f"demo-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    record, key = KeyStore(Lake(settings)).create(name, tuple(Scope))
    base = f"http://127.0.0.1:{settings.serve_port}"
    print(f"""
== the HTTP API (start it with `rayapp serve`) ==
API key {record.key_id} ({name}, every scope), shown once: `rayapp keys list|revoke` manage it
export RAYAPP_KEY={key}
curl -s -H "Authorization: Bearer $RAYAPP_KEY" {base}/v1/datasets
curl -s -H "Authorization: Bearer $RAYAPP_KEY" "{base}/v1/datasets/merchant_daily_stats/files"
curl -s -H "Authorization: Bearer $RAYAPP_KEY" {base}/v1/search -d '{{"query": "fuel station", "kind": "merchants", "k": 3}}'
open {base}/docs for every route and schema""")


def _print_guide(settings: Settings) -> None:
    from rayapp.model_store import model_root

    lake = Lake(settings)
    ledger = Ledger(lake)
    bronze, silver, quarantine = lake.uri(BRONZE), lake.uri(SILVER), lake.uri(QUARANTINE)
    run = ledger.last_run("bronze_to_silver")
    if run is not None:
        c = run.counts
        print("\n== data quality (last bronze_to_silver run) ==")
        print(f"rows in {c.get('rows_in', 0)}, quarantined {c.get('quarantined', 0)}; silver: inserted {c.get('inserted', 0)}, "
              f"updated {c.get('updated', 0)}, unchanged {c.get('unchanged', 0)}")  # fmt: skip
        for rule, n in run.details.get("rules", {}).items():
            print(f"  {rule:<24} {n:>8}" + ("  (warn: value nulled, row kept)" if rule == "invalid_country" else ""))
    train = ledger.last_run("train_fraud_model")
    if train is not None:
        m = train.details.get("metrics", {})
        print(f"\n== fraud model {train.details.get('model_version')} ==\nROC-AUC {m.get('roc_auc', 0):.4f}, "
              f"PR-AUC {m.get('pr_auc', 0):.4f} on the held-out period; artifact {train.details.get('path')}")  # fmt: skip
    predictions = lake.uri(PREDICTIONS)
    print(
        f"""
== where everything is ==
landing files   {settings.landing}
bronze table    {bronze}
silver table    {silver}
quarantine      {quarantine}
gold tables     {lake.uri(GOLD_ACCOUNT)}
                {lake.uri(GOLD_MERCHANT)}
predictions     {predictions}
models          {model_root(settings)}
run ledger      {ledger.runs_uri} (and _ledger/files)

== look at it ==
rayapp runs                                   # every run, newest first
python -c "import polars as pl; print(pl.read_delta('{silver}').head())"
python -c "import polars as pl; print(pl.read_delta('{quarantine}').select('transaction_id','amount','_reasons').head())"
python -c "import polars as pl; print(pl.read_delta('{lake.uri(GOLD_MERCHANT)}').sort('fraud_rate', descending=True).head())"
python -c "from deltalake import DeltaTable as T; print(T('{silver}').history(3))"   # versions (time travel)
python -c "import polars as pl; print(pl.read_delta('{predictions}').sort('fraud_score', descending=True).head())"
rayapp run ingest && rayapp run bronze_to_silver   # again: nothing new, silver version unchanged
rayapp serve                                  # the models over HTTP on 127.0.0.1:{settings.serve_port} (Ctrl-C to stop)"""
    )
    _print_stores(settings, ledger)


def _print_stores(settings: Settings, ledger: Ledger) -> None:
    """What each serving store holds after `publish`, and a one-liner to look inside."""
    from rayapp.sinks import stores

    if ledger.last_run("publish", status=("succeeded", "partial")) is None:
        return
    print("\n== serving stores (filled by `publish`) ==")
    for store, spec in stores().items():
        sink = spec.make(settings)
        try:
            sink.on_write_start()
            held = ", ".join(f"{k} {v}" for k, v in sink.counts().items())
        except Exception as exc:  # noqa: BLE001 - the guide still shows where to look
            held = f"unavailable: {exc}"
        finally:
            sink.close()
        print(f"{store:<11} {sink.display_url}\n            holds: {held}\n            look:  {sink.example_query()}")
    print("rayapp run replay_dlq                         # re-send batches a store refused (see `rayapp runs`)")
    check = ledger.last_run("reconcile", status=("succeeded", "mismatch"))
    if check is not None:
        print("\n== parity with the lake (`rayapp run reconcile`) ==")
        for store in stores():
            if f"{store}.checked" in check.counts:
                c = check.counts
                verdict = "equal" if not c[f"{store}.remaining"] else f"{c[f'{store}.remaining']} differences"
                print(f"{store:<11} {verdict}: {c[f'{store}.checked']} rows checked by key and content")
