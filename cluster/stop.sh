#!/usr/bin/env bash
# Stop every Ray node started on this machine.
set -euo pipefail
ray stop "$@"
