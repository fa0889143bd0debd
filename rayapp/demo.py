"""``rayapp demo``: generate data, run the stages built so far on embedded defaults, show where it all is."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from rayapp.errors import RayappError

if TYPE_CHECKING:
    from rayapp.settings import Settings

JobEntry = tuple[Callable[[list[str]], int], str]

#: Stages the demo runs after `generate` when there is no `pipeline` job.
DEMO_STAGES = ("ingest", "bronze_to_silver", "silver_to_gold", "train_fraud_model", "score_transactions", "publish")


def run_demo(rows: int, seed: int, files: int, global_args: list[str], jobs: dict[str, JobEntry]) -> int:
    """Run generate + every demo stage in one process (one Ray instance) and print a guide."""
    if rows < 1:
        raise RayappError("demo: --rows must be ≥ 1")
    steps: list[tuple[str, list[str]]] = [("generate", ["--rows", str(rows), "--seed", str(seed), "--files", str(files)])]
    if "pipeline" in jobs:
        steps.append(("pipeline", []))
    else:
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
    from rayapp.jobkit import job_parser, settings_from_args
    from rayapp.ledger import Ledger
    from rayapp.pipelines.silver import GOLD_ACCOUNT, GOLD_MERCHANT, QUARANTINE, SILVER, uri

    settings = settings_from_args(job_parser("demo", "demo").parse_args(global_args))  # same options the jobs got
    bronze = settings.table_uri("bronze", "transactions")
    silver, quarantine = uri(settings, SILVER), uri(settings, QUARANTINE)
    run = Ledger(settings).last_run("bronze_to_silver")
    if run is not None:
        c = run.counts
        print("\n== data quality (last bronze_to_silver run) ==")
        print(f"rows in {c.get('rows_in', 0)}, quarantined {c.get('quarantined', 0)}; silver: inserted {c.get('inserted', 0)}, "
              f"updated {c.get('updated', 0)}, unchanged {c.get('unchanged', 0)}")  # fmt: skip
        for rule, n in run.details.get("rules", {}).items():
            print(f"  {rule:<24} {n:>8}" + ("  (warn: value nulled, row kept)" if rule == "invalid_country" else ""))
    train = Ledger(settings).last_run("train_fraud_model")
    if train is not None:
        m = train.details.get("metrics", {})
        print(f"\n== fraud model {train.details.get('model_version')} ==\nROC-AUC {m.get('roc_auc', 0):.4f}, "
              f"PR-AUC {m.get('pr_auc', 0):.4f} on the held-out period; artifact {train.details.get('path')}")  # fmt: skip
    predictions = uri(settings, "silver/predictions")
    print(
        f"""
== where everything is ==
landing files   {settings.landing}
bronze table    {bronze}
silver table    {silver}
quarantine      {quarantine}
gold tables     {uri(settings, GOLD_ACCOUNT)}
                {uri(settings, GOLD_MERCHANT)}
predictions     {predictions}
models          {settings.data_dir / 'models' / 'fraud'}
run ledger      {settings.table_uri('_ledger', 'runs')} (and _ledger/files)

== look at it ==
rayapp runs                                   # every run, newest first
python -c "import polars as pl; print(pl.read_delta('{silver}').head())"
python -c "import polars as pl; print(pl.read_delta('{quarantine}').select('transaction_id','amount','_reasons').head())"
python -c "import polars as pl; print(pl.read_delta('{uri(settings, GOLD_MERCHANT)}').sort('fraud_rate', descending=True).head())"
python -c "from deltalake import DeltaTable as T; print(T('{silver}').history(3))"   # versions (time travel)
python -c "import polars as pl; print(pl.read_delta('{predictions}').sort('fraud_score', descending=True).head())"
rayapp run ingest && rayapp run bronze_to_silver   # again: nothing new, silver version unchanged
rayapp serve                                  # the models over HTTP on 127.0.0.1:{settings.serve_port} (Ctrl-C to stop)"""
    )
    _print_stores(settings)


def _print_stores(settings: "Settings") -> None:
    """What each serving store holds after `publish`, and a one-liner to look inside."""
    from rayapp.ledger import Ledger
    from rayapp.pipelines.publish import STORES_ORDER
    from rayapp.sinks import make_sink

    if Ledger(settings).last_run("publish", status=("succeeded", "partial")) is None:
        return
    print("\n== serving stores (filled by `publish`) ==")
    for store in STORES_ORDER:
        sink = make_sink(store, settings.store_url(store), settings.sink_options())
        try:
            sink.on_write_start()
            held = ", ".join(f"{k} {v}" for k, v in sink.counts().items())
        except Exception as exc:  # noqa: BLE001 - the guide still shows where to look
            held = f"unavailable: {exc}"
        finally:
            sink.close()
        print(f"{store:<11} {sink.display_url}\n            holds: {held}\n            look:  {sink.example_query()}")
    print("rayapp run replay_dlq                         # re-send batches a store refused (see `rayapp runs`)")
