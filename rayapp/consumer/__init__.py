"""The consumer side of the lake: API keys, signed file URLs, dataset delivery, and request limits.

The Serve ingress (``serve/api.py``) exposes these over HTTP; the store lookups and vector search
live with each store in :mod:`rayapp.sinks` (one module knows one store, both directions).
"""
