"""The run report: one self-contained HTML page (plotly.js inlined, no network) with plots of the
last runs, one pipeline run's stages, data quality, the fraud model, the stores and the lake.

``rayapp report`` writes it; the Serve app answers it at ``/ui``. Everything comes from the run
ledger, the lake's Delta logs and the last training run's evaluation (no store is queried).
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any

from rayapp.catalog import TABLES
from rayapp.lake import Lake
from rayapp.ledger import Ledger, RunRecord

#: Stages whose rows per run are plotted over time.
FLOW_STAGES = ("ingest", "bronze_to_silver", "silver_to_gold", "score_transactions", "publish")
_LAYOUT = {"template": "plotly_white", "height": 360, "margin": {"l": 60, "r": 30, "t": 50, "b": 50}}


def _fig(title: str, traces: list[Any], empty: str | None = None, **layout: Any) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(traces)
    fig.update_layout(title=title, **{**_LAYOUT, **layout})
    if empty is not None:
        fig.add_annotation(text=empty, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5, font={"size": 14, "color": "#888"})
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    return fig


def _chosen(ledger: Ledger, run_id: str | None) -> tuple[RunRecord | None, list[RunRecord]]:
    """The run the report is about (default: the latest pipeline run) and its stage runs."""
    all_runs = ledger.runs()
    if run_id is not None:
        run = next((r for r in all_runs if r.run_id == run_id), None)
        if run is None:
            from rayapp.errors import RayappError

            raise RayappError(f"no run {run_id!r} in the ledger at {ledger.runs_uri}")
    else:
        run = next((r for r in all_runs if r.job == "pipeline"), None)
    if run is None:  # no pipeline yet: the latest run of each stage stands in
        latest: dict[str, RunRecord] = {}
        for r in all_runs:
            latest.setdefault(r.job, r)
        return None, sorted(latest.values(), key=lambda r: r.started_at)
    children = sorted((r for r in all_runs if r.parent_run_id == run.run_id), key=lambda r: r.started_at)
    return run, children or [run]


def _flow_figs(runs: list[RunRecord], limit: int) -> list[Any]:
    import plotly.graph_objects as go

    traces, share_x, share_y = [], [], []
    for stage in FLOW_STAGES:
        mine = sorted((r for r in runs if r.job == stage and r.status in ("succeeded", "partial")), key=lambda r: r.started_at)[-limit:]
        if mine:
            traces.append(go.Scatter(x=[r.started_at for r in mine], y=[r.counts.get("rows_written", 0) for r in mine],
                                     mode="lines+markers", name=stage))  # fmt: skip
        if stage == "bronze_to_silver":
            for r in mine:
                rows_in = r.counts.get("rows_in", 0)
                share_x.append(r.started_at)
                share_y.append(100.0 * r.counts.get("quarantined", 0) / rows_in if rows_in else 0.0)
    rows = _fig(f"Rows written per stage (last {limit} runs of each)", traces, None if traces else "no runs yet",
                xaxis_title="run started (UTC)", yaxis_title="rows written")  # fmt: skip
    share = _fig("Quarantine share per bronze_to_silver run",
                 [go.Scatter(x=share_x, y=share_y, mode="lines+markers", name="quarantined %")] if share_x else [],
                 None if share_x else "no bronze_to_silver runs yet", yaxis_title="% of rows in", xaxis_title="run started (UTC)")  # fmt: skip
    return [rows, share]


def _stage_figs(children: list[RunRecord]) -> list[Any]:
    import plotly.graph_objects as go

    b2s = next((r for r in reversed(children) if r.job == "bronze_to_silver"), None)
    rules = {k: v for k, v in (b2s.details.get("rules", {}) if b2s else {}).items()}
    rule_fig = _fig("Quarantined rows per expectation (bronze_to_silver)",
                    [go.Bar(x=list(rules.values()), y=list(rules.keys()), orientation="h", name="rows")] if rules else [],
                    None if rules else "no bronze_to_silver run in this report", xaxis_title="rows")  # fmt: skip
    timed = [r for r in children if r.duration_s is not None]
    colors = {"succeeded": "#2e7d32", "partial": "#f9a825", "mismatch": "#f9a825", "failed": "#c62828", "abandoned": "#c62828"}
    dur_fig = _fig("Stage durations", [go.Bar(x=[r.duration_s for r in timed], y=[r.job for r in timed], orientation="h",
                                              marker_color=[colors.get(r.status, "#607d8b") for r in timed],
                                              text=[r.status for r in timed], name="seconds")] if timed else [],
                   None if timed else "no finished runs yet", xaxis_title="seconds", yaxis={"autorange": "reversed"})  # fmt: skip
    return [rule_fig, dur_fig]


def _model_figs(train: RunRecord | None) -> list[Any]:
    import plotly.graph_objects as go

    metrics = train.details.get("metrics", {}) if train else {}
    curves = metrics.get("curves") or {}
    version = train.details.get("model_version", "") if train else ""
    none = "no trained model yet" if train is None else "this model version recorded no curves: train again"
    roc = curves.get("roc")
    roc_fig = _fig(f"ROC, model {version} (AUC {metrics.get('roc_auc', float('nan')):.4f})",
                   [go.Scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", name="model"),
                    go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "#999"}, name="chance")] if roc else [],
                   None if roc else none, xaxis_title="false positive rate", yaxis_title="true positive rate")  # fmt: skip
    pr = curves.get("pr")
    pr_fig = _fig(f"Precision-recall, model {version} (AP {metrics.get('pr_auc', float('nan')):.4f})",
                  [go.Scatter(x=pr["recall"], y=pr["precision"], mode="lines", name="model")] if pr else [],
                  None if pr else none, xaxis_title="recall", yaxis_title="precision")  # fmt: skip
    edges = curves.get("score_bins")
    hist = []
    if edges:
        mids = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
        hist = [go.Bar(x=mids, y=curves["scores_legit"], name="legitimate"), go.Bar(x=mids, y=curves["scores_fraud"], name="fraud")]
    score_fig = _fig("Fraud score distribution on the held-out period", hist, None if hist else none, barmode="stack",
                     xaxis_title="fraud score", yaxis_title="transactions")  # fmt: skip
    return [roc_fig, pr_fig, score_fig]


def _store_fig(publish: RunRecord | None, dlq: dict[str, int]) -> Any:
    import plotly.graph_objects as go

    stores = sorted({k.split(".")[0] for k in (publish.counts if publish else {}) if k.endswith(".written")} | set(dlq))
    if not stores:
        return _fig("Serving stores", [], "no publish run yet")
    c = publish.counts if publish else {}
    traces = [go.Bar(x=stores, y=[c.get(f"{s}.written", 0) for s in stores], name="written"),
              go.Bar(x=stores, y=[c.get(f"{s}.failed", 0) for s in stores], name="failed"),
              go.Bar(x=stores, y=[dlq.get(s, 0) for s in stores], name="waiting in the DLQ")]  # fmt: skip
    return _fig(f"Rows per store (publish {publish.run_id if publish else '-'}) and dead letters now", traces, barmode="group",
                yaxis_title="rows")  # fmt: skip


def _tables(lake: Lake) -> list[dict[str, Any]]:
    out = []
    for t in TABLES.values():
        if not lake.exists(t):
            continue
        dt = lake.open(t)
        last = dt.history(1)[0]
        ts = last.get("timestamp")
        out.append({"table": t.name, "version": dt.version(), "rows": lake.rows(t), "files": len(dt.file_uris()),
                    "last_commit": datetime.fromtimestamp(ts / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ts else "-",
                    "operation": last.get("operation", "-")})  # fmt: skip
    return out


def _lake_fig(tables: list[dict[str, Any]]) -> Any:
    import plotly.graph_objects as go

    if not tables:
        return _fig("Lake tables", [], "no lake tables yet")
    return _fig("Lake tables: rows (bar label: current version)",
                [go.Bar(x=[t["table"] for t in tables], y=[t["rows"] for t in tables], text=[f"v{t['version']}" for t in tables],
                        textposition="outside", name="rows")], yaxis_title="rows")  # fmt: skip


def build_report(lake: Lake, run_id: str | None = None, limit: int = 30) -> str:
    """The report page for ``run_id`` (default: the latest pipeline run) as one HTML string."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    from rayapp.tools.runs_view import run_tree

    ledger = Ledger(lake)
    runs = ledger.runs()
    run, children = _chosen(ledger, run_id)
    train = next((r for r in runs if r.job == "train_fraud_model" and r.status == "succeeded"), None)
    publish = next((r for r in reversed(children) if r.job == "publish"), None) or next((r for r in runs if r.job == "publish"), None)
    dlq: dict[str, int] = {}
    for d in ledger.dead_letters():
        dlq[d.store] = dlq.get(d.store, 0) + d.rows
    tables = _tables(lake)
    figs = [*_flow_figs(runs, limit), *_stage_figs(children), *_model_figs(train), _store_fig(publish, dlq), _lake_fig(tables)]
    config = {"displaylogo": False, "displayModeBar": False}
    divs = "\n".join('<div class="plot">' + pio.to_html(f, include_plotlyjs=False, full_html=False, div_id=f"plot-{i}", config=config)
                     + "</div>" for i, f in enumerate(figs))  # fmt: skip
    about = run_tree(run, children) if run else "no pipeline run yet: the latest run of each stage is shown"
    rows = "".join(f"<tr><td>{html.escape(t['table'])}</td><td>{t['version']}</td><td>{t['rows']:,}</td><td>{t['files']}</td>"
                   f"<td>{t['last_commit']}</td><td>{html.escape(str(t['operation']))}</td></tr>" for t in tables)  # fmt: skip
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    title = f"rayapp run report: {run.run_id}" if run else "rayapp run report"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
pre {{ background: #f6f8fa; padding: 12px; overflow-x: auto; font-size: 12px; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 16px; }}
.plot {{ border: 1px solid #e3e3e3; border-radius: 6px; padding: 4px; }}
table {{ border-collapse: collapse; font-size: 13px; }} td, th {{ border: 1px solid #ddd; padding: 4px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
</style>
<script>{get_plotlyjs()}</script></head>
<body>
<h1>{html.escape(title)}</h1>
<p>lake {html.escape(lake.settings.lake_uri)} &middot; made {made} &middot; {len(runs)} runs in the ledger</p>
<h2>The run</h2>
<pre>{html.escape(about)}</pre>
<div class="grid">
{divs}
</div>
<h2>Lake tables</h2>
<table><tr><th>table</th><th>version</th><th>rows</th><th>files</th><th>last commit (UTC)</th><th>operation</th></tr>{rows}</table>
</body></html>
"""


def write_report(lake: Lake, out: str, run_id: str | None = None) -> str:
    """Write the page to the local path ``out``; returns its absolute path."""
    import os

    path = os.path.abspath(os.path.expanduser(out))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    page = build_report(lake, run_id)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(page)
    os.replace(tmp, path)
    return path
