"""Exit codes of every job (the README's table is :data:`EXIT_CODES`).

A leaf: schedulers (``rayapp.tools.ray_jobs`` in an Airflow worker) import it without the rest of rayapp.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_MISMATCH = 4
EXIT_BUSY = 75  # EX_TEMPFAIL: try again later
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    EXIT_OK: "succeeded (or partial with --allow-partial)",
    EXIT_FAILED: "the run failed (its record says why)",
    EXIT_USAGE: "bad arguments or settings (nothing started, nothing recorded)",
    EXIT_PARTIAL: "partial: some batches went to the dead-letter queue (publish, replay_dlq, backfills, pipeline)",
    EXIT_MISMATCH: "reconcile: a store still differs from the lake (run it with --repair)",
    EXIT_BUSY: "another run of the same stage holds the lease on this lake (nothing started, nothing recorded)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
