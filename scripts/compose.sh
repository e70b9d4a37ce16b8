#!/usr/bin/env bash
# docker compose (v2) or docker-compose (v1.29), for one deployment's env file.
#
#   scripts/compose.sh ENV_FILE compose-args...
#
# Sets what compose cannot know by itself: the absolute paths of the repository, of the ansible
# folder and of the secrets folder (the hub bind-mounts the runbook library and the playbooks into
# engineers' containers through the host's Docker engine; the runs service and the fleet mount the
# SSH certificate authorities' files), and the group of the Docker socket (the hub runs as a
# non-root user in that group).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
env_file=$1
shift
export OPSBOOK_ROOT=$root
# Each deployment keeps its generated key files in secrets/ beside its env file.
OPSBOOK_SECRETS=$(cd "$(dirname "$env_file")" && pwd)/secrets
export OPSBOOK_SECRETS
# The playbooks and inventories engineers and the runs service get: ANSIBLE_DIR of the env file
# (a team's own folder, e.g. a checkout of its inventory repository), else ansible/ here.
ansible_dir=$(sed -n 's/^ANSIBLE_DIR=//p' "$env_file" | tail -n 1)
OPSBOOK_ANSIBLE_DIR=$(cd "$root" && cd "${ansible_dir:-ansible}" && pwd)
export OPSBOOK_ANSIBLE_DIR
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
