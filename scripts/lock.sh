#!/usr/bin/env bash
# Compile every requirements.in into its requirements.txt with exact pins (`make lock`).
#
# The images' locks are compiled inside the base image, with Debian bookworm's own Python (3.11.2):
# a lock compiled with another 3.11 release can pin packages that 3.11.2 cannot install. The test
# suite's lock is compiled with the Python that runs the tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
compile='pip-compile -q --strip-extras --no-header --annotation-style=line --no-emit-index-url --no-emit-find-links'

docker run --rm -v "$root:/src" -w /src -e HOME=/tmp opsbook/base:bookworm sh -ec "
  apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  python3 -m venv /tmp/lock && /tmp/lock/bin/pip install -q pip-tools==7.6.2
  for f in hub/requirements.in images/singleuser/requirements.in images/runs/requirements.in; do
    /tmp/lock/bin/$compile -o \${f%.in}.txt \$f
  done
  chown $(id -u):$(id -g) hub/requirements.txt images/singleuser/requirements.txt images/runs/requirements.txt"

venv=build/piptools
[ -x "$venv/bin/pip-compile" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q pip-tools==7.6.2; }
# shellcheck disable=SC2086 # $compile is a command line
$venv/bin/$compile -o tests/requirements.txt tests/requirements.in
