#!/usr/bin/env bash
# `make up`'s settings check, before anything is built or started (scripts/check_env.py says how
# and why). It runs on the machine's own python3, without a venv or any package: Debian bookworm's
# 3.11 or newer. Without one it says so and lets `make up` go on: the hub and the runs service
# still check every setting at start, and scripts/wait-ready.sh prints their refusal.
#
#   scripts/check-env.sh ENV_FILE
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "settings: not checked before the build (needs python3 3.11 or newer); the services check them at start" >&2
  exit 0
fi
exec python3 -I -S -B "$root/scripts/check_env.py" "$1"
