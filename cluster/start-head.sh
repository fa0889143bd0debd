#!/usr/bin/env bash
# Start a local Ray head node: GCS on $PORT (6379), dashboard on 127.0.0.1:8265, metrics on :8080.
# Token authentication is on, always: the head, the workers (add-worker.sh) and `ray job submit`
# all present the token (RAY_AUTH_TOKEN, or the file RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token).
# Then: export RAY_AUTH_MODE=token RAY_ADDRESS=http://127.0.0.1:8265 for `ray job submit`.
set -euo pipefail
export RAY_AUTH_MODE=token
NUM_CPUS="${NUM_CPUS:-2}"
if [[ -z "${RAY_AUTH_TOKEN:-}" && ! -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]]; then
  ray get-auth-token --generate >/dev/null   # writes ~/.ray/auth_token (or RAY_AUTH_TOKEN_PATH)
fi
ray start --head \
  --port="${PORT:-6379}" \
  --num-cpus="$NUM_CPUS" \
  --dashboard-host=127.0.0.1 --dashboard-port="${DASHBOARD_PORT:-8265}" \
  --metrics-export-port="${METRICS_PORT:-8080}" \
  "$@"
