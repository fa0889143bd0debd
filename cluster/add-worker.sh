#!/usr/bin/env bash
# Add a worker node on this machine to the head started by start-head.sh (GCS on port 6379).
# Token authentication stays on: the worker presents the head's token (RAY_AUTH_TOKEN, or the
# file RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token — copy it from the head on another machine).
set -euo pipefail
export RAY_AUTH_MODE=token
if [[ -z "${RAY_AUTH_TOKEN:-}" && ! -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]]; then
  echo "error: no Ray auth token: set RAY_AUTH_TOKEN or copy the head's ~/.ray/auth_token here" >&2
  exit 2
fi
ray start --address="${HEAD_ADDRESS:-127.0.0.1:6379}" --num-cpus="${NUM_CPUS:-1}" "$@"
