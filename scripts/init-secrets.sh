#!/usr/bin/env bash
# Generate the key files of a deployment in secrets/ beside its env file, once; never printed.
#
#   scripts/init-secrets.sh ENV_FILE
#
# secrets/fleet-ssh/id_ed25519: the demo team's SSH key for the fleet. Owned by uid 1000 (the
# engineers' user in their containers, where it is mounted read-only) and readable by it alone, as
# ssh requires. Made with ssh-keygen from the singleuser image, so the host needs no OpenSSH.
set -euo pipefail
env_file=$1
secrets=$(cd "$(dirname "$env_file")" && pwd)/secrets
tag=$(sed -n 's/^OPSBOOK_VERSION=//p' "$env_file" | tail -n 1)
key_dir=$secrets/fleet-ssh

if [ ! -f "$key_dir/id_ed25519" ]; then
  install -d -m 0755 "$secrets" "$key_dir"
  docker run --rm --user 0 -v "$key_dir:/out" "opsbook/singleuser:${tag:-0.1.0}" \
    sh -c 'ssh-keygen -q -t ed25519 -N "" -C opsbook-fleet -f /out/id_ed25519 &&
           chown 1000:100 /out/id_ed25519 /out/id_ed25519.pub &&
           chmod 0400 /out/id_ed25519 && chmod 0444 /out/id_ed25519.pub'
  echo "generated the fleet SSH key in $key_dir"
fi
