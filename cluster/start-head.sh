#!/usr/bin/env bash
# Start a local Ray head node: dashboard on 127.0.0.1:8265, Prometheus metrics on :8080.
# Then: export RAY_AUTH_MODE=token RAY_ADDRESS=http://127.0.0.1:8265 for `ray job submit`.
set -euo pipefail
NUM_CPUS="${NUM_CPUS:-2}"
# Ray's token authentication stays on: make sure this machine has a token (~/.ray/auth_token)
# that the head, the workers and `ray job submit` (with RAY_AUTH_MODE=token) all read.
ray get-auth-token --generate >/dev/null
ray start --head \
  --num-cpus="$NUM_CPUS" \
  --dashboard-host=127.0.0.1 --dashboard-port=8265 \
  --metrics-export-port="${METRICS_PORT:-8080}" \
  "$@"
