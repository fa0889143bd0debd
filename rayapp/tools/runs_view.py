"""What ``rayapp runs`` prints: the ledger as a table sized to its contents, one run (a pipeline
with its stage runs as a tree), or either as JSON for machines."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rayapp.ledger import RunRecord


def fmt_ts(ts: datetime | None) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _dur(r: RunRecord) -> str:
    return f"{r.duration_s:.1f}s" if r.duration_s is not None else "-"


def _n(v: Any) -> str:
    return "-" if v is None else f"{int(v):,}"


def flow(r: RunRecord) -> dict[str, int | None]:
    """Rows in / out, quarantined and dead-lettered, from whichever counts the stage keeps."""
    c = r.counts
    rows_in = c.get("rows_in", c.get("rows_read"))
    return {"rows_in": rows_in, "rows_out": c.get("rows_written"), "quarantined": c.get("quarantined"),
            "dead_letters": c.get("dead_letters")}  # fmt: skip


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    out = []
    for cells in [header, *rows]:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        out.append("  ".join(parts).rstrip())
    return out


def runs_table(runs: list[RunRecord]) -> str:
    """Newest first; columns as wide as their longest value (run ids never break the layout)."""
    rows = []
    for r in runs:
        counts = " ".join(f"{k}={v}" for k, v in r.counts.items() if v and not k.startswith("rule_"))
        rows.append([r.run_id, r.job, r.status, fmt_ts(r.started_at), _dur(r), counts or (r.error or "")[:80]])
    return "\n".join(_table(["RUN ID", "JOB", "STATUS", "STARTED (UTC)", "DURATION", "COUNTS"], rows, {4}))


def run_tree(run: RunRecord, children: list[RunRecord]) -> str:
    """One run for people: header, its stage runs as a tree (pipelines), counts, versions, error."""
    lines = [f"{run.job} {run.run_id}: {run.status} in {_dur(run)}, started {fmt_ts(run.started_at)} UTC"]
    if run.parent_run_id:
        lines.append(f"part of {run.parent_run_id}")
    if run.error:
        lines.append(f"error: {run.error}")
    planned = {str(s["stage"]): s for s in run.details.get("stages", [])}
    if children or planned:
        by_job = {c.job: c for c in sorted(children, key=lambda c: c.started_at)}
        order = list(planned) or list(by_job)
        order += [j for j in by_job if j not in order]
        rows = []
        for i, name in enumerate(order):
            branch = "└─ " if i == len(order) - 1 else "├─ "
            child = by_job.get(name)
            if child is None:
                reason = planned.get(name, {}).get("reason")
                status = str(planned.get(name, {}).get("status", "-")) + (f" ({reason})" if reason else "")
                rows.append([branch + name, status, "-", "-", "-", "-", "-", ""])
                continue
            f = flow(child)
            rows.append([branch + name, child.status, _dur(child), _n(f["rows_in"]), _n(f["rows_out"]), _n(f["quarantined"]),
                         _n(f["dead_letters"]), child.run_id])  # fmt: skip
        lines.append("")
        lines += _table(["STAGE", "STATUS", "DURATION", "ROWS IN", "ROWS OUT", "QUARANTINED", "DLQ", "RUN ID"], rows, {2, 3, 4, 5, 6})
        errors = [c for c in children if c.error]
        lines += [f"  {c.job}: {c.error}" for c in errors]
    if run.counts:
        lines += ["", "counts:"] + [f"  {k:<32} {v:>12,}" for k, v in run.counts.items()]
    for label, versions in (("versions read", run.versions_read), ("versions written", run.versions_written)):
        if versions:
            lines.append(f"{label}: " + ", ".join(f"{t}@{v}" for t, v in versions.items()))
    return "\n".join(lines)


def run_doc(run: RunRecord, children: list[RunRecord]) -> dict[str, Any]:
    """One run (and its stage runs) for machines."""

    def doc(r: RunRecord) -> dict[str, Any]:
        return r.to_row() | {"args": r.args, "counts": r.counts, "versions_read": r.versions_read, "duration_s": r.duration_s,
                             "versions_written": r.versions_written, "details": r.details}  # fmt: skip

    return doc(run) | {"stages": [doc(c) for c in sorted(children, key=lambda c: c.started_at)]}
