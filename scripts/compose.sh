#!/usr/bin/env bash
# docker compose (v2) or docker-compose (v1.29), for one deployment's env file.
#
#   scripts/compose.sh ENV_FILE compose-args...
#
# Sets what compose cannot know by itself: the repository's absolute path (the runbook library is
# bind-mounted from it into engineers' containers by the hub, through the host's Docker engine) and
# the group of the Docker socket (the hub runs as a non-root user in that group).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
env_file=$1
shift
export OPSBOOK_ROOT=$root
DOCKER_GID=$(stat -c %g /var/run/docker.sock)
export DOCKER_GID
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  echo "neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 1
fi
project=$(sed -n 's/^COMPOSE_PROJECT_NAME=//p' "$env_file")
exec "${compose[@]}" --project-directory "$root" -f "$root/docker-compose.yml" \
  --env-file "$env_file" -p "${project:-opsbook}" "$@"
