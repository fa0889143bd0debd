"""Job entrypoints: one module per job, each exposing JOB = (entrypoint, description)."""
