#!/usr/bin/env bash
# Stop the Ray cluster started by start-head.sh (GCS port $PORT, default 6379) and its workers on
# this machine — only that cluster: other Ray clusters and jobs on the machine are left alone.
set -euo pipefail
PYTHON="${PYTHON:-python}"
"$PYTHON" -m rayapp.tools.raynodes stop --port "${PORT:-6379}"
