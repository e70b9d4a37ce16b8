#!/usr/bin/env bash
# Build every image with plain `docker build` (no BuildKit or buildx), base first.
#
#   scripts/build-images.sh [ENV_FILE]   tag from OPSBOOK_VERSION; the CA bundle the images
#                                        trust: EXTRA_CA_CERTS from the environment or the env
#                                        file, else this machine's own (scripts/ca-bundle.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
env_file=${1:-.env}
setting() { [ -f "$env_file" ] && sed -n "s/^$1=//p" "$env_file" | tail -n 1; }
tag=${OPSBOOK_VERSION:-$(setting OPSBOOK_VERSION)}
tag=${tag:-0.1.0}
EXTRA_CA_CERTS=$(scripts/ca-bundle.sh choose "$env_file")
export EXTRA_CA_CERTS
export DOCKER_BUILDKIT=0

bash images/base/build.sh

build() { # NAME CONTEXT DOCKERFILE [docker build options...]
  local name=$1 context=$2 dockerfile=$3 started=$SECONDS log
  shift 3
  log=$(mktemp)
  if ! docker build "$@" -t "opsbook/$name:$tag" -f "$dockerfile" "$context" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "build of opsbook/$name failed (full log: $log)" >&2
    scripts/ca-bundle.sh hint "$log" "opsbook/$name" "$EXTRA_CA_CERTS" || true
    exit 1
  fi
  rm -f "$log"
  echo "built opsbook/$name:$tag in $((SECONDS - started)) s"
}

build proxy images/proxy images/proxy/Dockerfile
build hub . hub/Dockerfile
build singleuser . images/singleuser/Dockerfile
build runs . images/runs/Dockerfile
# The demo: identity provider, fleet, package repository, monitoring.
build idp images/idp images/idp/Dockerfile
build pkgrepo images/fleet images/fleet/repo.Dockerfile
build fleet-web images/fleet images/fleet/host.Dockerfile --build-arg STACK=web
build fleet-db images/fleet images/fleet/host.Dockerfile --build-arg STACK=db
build prometheus images/prometheus images/prometheus/Dockerfile
build alertmanager images/alertmanager images/alertmanager/Dockerfile
build recorder images/recorder images/recorder/Dockerfile
# For the tests of the runs service against PostgreSQL (and an example for production).
build postgres images/postgres images/postgres/Dockerfile
