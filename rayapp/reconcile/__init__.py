"""``reconcile``: prove each serving store equals the lake, key range by key range, and repair it.

- :mod:`rayapp.reconcile.expected` — what each view must hold, from the lake.
- :mod:`rayapp.reconcile.compare` — key and content-hash comparison of one range.
- :mod:`rayapp.reconcile.run` — the run: every store and view, repairs, the verdict.
"""

from __future__ import annotations

from rayapp.reconcile.run import ReconcileResult, reconcile

__all__ = ["ReconcileResult", "reconcile"]
