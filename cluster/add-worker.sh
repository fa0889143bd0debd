#!/usr/bin/env bash
# Add a worker node on this machine to the head started by start-head.sh (GCS on port 6379).
set -euo pipefail
ray start --address="${HEAD_ADDRESS:-127.0.0.1:6379}" --num-cpus="${NUM_CPUS:-1}" "$@"
