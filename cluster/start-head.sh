#!/usr/bin/env bash
# Start a local Ray head node: dashboard on 127.0.0.1:8265, Prometheus metrics on :8080.
# Then: export RAY_ADDRESS=http://127.0.0.1:8265 for `ray job submit`, or run jobs with RAY_ADDRESS=auto.
set -euo pipefail
NUM_CPUS="${NUM_CPUS:-2}"
ray start --head \
  --num-cpus="$NUM_CPUS" \
  --dashboard-host=127.0.0.1 --dashboard-port=8265 \
  --metrics-export-port="${METRICS_PORT:-8080}" \
  "$@"
