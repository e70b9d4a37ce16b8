#!/usr/bin/env bash
# Generate the SSH certificate authorities and the demo hosts' keys of a deployment in
# secrets/ssh/ beside its env file: only what is missing, never printed.
#
#   scripts/init-secrets.sh ENV_FILE
#
# secrets/ssh/user_ca, user_ca.pub      Ed25519 user CA: the runs service signs engineers' short-lived
#                                       certificates with it. The private half is owned by uid 990 (the
#                                       runs service's user, the only container that mounts it) and
#                                       readable by it alone (0400); the fleet mounts the public half.
# secrets/ssh/host_ca, host_ca.pub      Ed25519 host CA: signs the hosts' keys below, here and nowhere
#                                       else (the private half is mounted into no container). Its
#                                       public line goes into the env file as SSH_HOST_CA_PUBLIC_KEY:
#                                       engineers' containers trust it (@cert-authority in known_hosts).
# secrets/ssh/hosts/<name>/ssh_host_ed25519_key, .pub, -cert.pub
#                                       each demo host's key (root, 0400) and host certificate (-h,
#                                       principal <name>, and pkgrepo-admin for pkgrepo; valid from an
#                                       hour ago for 520 weeks: ten years, a demo's lifetime) signed
#                                       by the host CA.
#
# Run again, it makes only what is missing, and re-signs a host certificate that is missing or was
# signed by another host CA (e.g. host_ca was deleted and made anew). To rotate a CA, delete its two
# files and run `make up` (then restart the fleet and the runs service). Made with ssh-keygen from
# the singleuser image (as root, to set the owners), so this machine needs no OpenSSH.
set -euo pipefail
env_file=$1
secrets=$(cd "$(dirname "$env_file")" && pwd)/secrets
ssh_dir=$secrets/ssh
tag=$(sed -n 's/^OPSBOOK_VERSION=//p' "$env_file" | tail -n 1)
# The demo's hosts: the compose services (and inventory names) web-1..3, db-1..3 and pkgrepo.
hosts=(web-1 web-2 web-3 db-1 db-2 db-3 pkgrepo)
host_validity=-1h:+520w
runs_uid=990

# Inside the container: $1 the ssh folder, $2 the host certificates' validity, $3 the owner of
# user_ca, then the host names. Prints only what it made, never a key.
# shellcheck disable=SC2016 # expanded by the container's shell
keygen='set -eu
dir=$1 validity=$2 runs_uid=$3
shift 3
cd "$dir"
pair() { # FILE COMMENT: a key pair, or the missing public half of an existing key
  if [ ! -f "$1" ]; then
    rm -f "$1.pub" "$1-cert.pub"
    ssh-keygen -q -t ed25519 -N "" -C "$2" -f "$1"
    echo "made $1"
  elif [ ! -f "$1.pub" ]; then
    ssh-keygen -y -f "$1" >"$1.pub"
  fi
  chmod 0400 "$1"
  chmod 0444 "$1.pub"
}
pair user_ca opsbook-user-ca
chown "$runs_uid:$runs_uid" user_ca
pair host_ca opsbook-host-ca
chown 0:0 host_ca
ca=$(ssh-keygen -l -f host_ca.pub | cut -d" " -f2)
for name in "$@"; do
  mkdir -p "hosts/$name"
  chmod 0755 hosts "hosts/$name"
  key=hosts/$name/ssh_host_ed25519_key
  pair "$key" "$name"
  chown 0:0 "$key"
  signed_by=$(ssh-keygen -L -f "$key-cert.pub" 2>/dev/null | sed -n "s/^ *Signing CA: [^ ]* \([^ ]*\).*/\1/p")
  # pkgrepo: its sshd listens on pkgrepo-admin only, the name the runs service reaches it by.
  case $name in pkgrepo) principals=pkgrepo,pkgrepo-admin ;; *) principals=$name ;; esac
  signed_for=$(ssh-keygen -L -f "$key-cert.pub" 2>/dev/null |
    sed -n "/^ *Principals:/,/^ *Critical Options:/{/:/!s/^ *//p}" | paste -sd, -)
  if [ "$signed_by" != "$ca" ] || [ "$signed_for" != "$principals" ]; then
    ssh-keygen -q -s host_ca -h -I "$name" -n "$principals" -V "$validity" "$key.pub"
    chmod 0444 "$key-cert.pub"
    echo "signed the host certificate of $name"
  fi
done'

missing=false
for file in user_ca user_ca.pub host_ca host_ca.pub; do
  [ -f "$ssh_dir/$file" ] || missing=true
done
for name in "${hosts[@]}"; do
  for file in ssh_host_ed25519_key ssh_host_ed25519_key.pub ssh_host_ed25519_key-cert.pub; do
    [ -f "$ssh_dir/hosts/$name/$file" ] || missing=true
  done
done
# The repository's certificate from before it answered as pkgrepo-admin too: signed again.
repo_cert=$ssh_dir/hosts/pkgrepo/ssh_host_ed25519_key-cert.pub
if [ -f "$repo_cert" ] && ! cut -d" " -f2 "$repo_cert" | base64 -d | grep -qa pkgrepo-admin; then
  missing=true
fi
if $missing; then
  install -d -m 0755 "$secrets" "$ssh_dir"
  docker run --rm --user 0 --network none -v "$ssh_dir:/out" "opsbook/singleuser:${tag:-0.1.0}" \
    sh -c "$keygen" opsbook-secrets /out "$host_validity" "$runs_uid" "${hosts[@]}" |
    sed "s|^|init-secrets: $ssh_dir: |"
fi

# The host CA's public line, for engineers' known_hosts (one line; written when missing or when
# the host CA was made anew).
line=$(head -n 1 "$ssh_dir/host_ca.pub")
if ! grep -qxF "SSH_HOST_CA_PUBLIC_KEY=$line" "$env_file"; then
  if grep -q '^SSH_HOST_CA_PUBLIC_KEY=' "$env_file"; then
    sed -i "s|^SSH_HOST_CA_PUBLIC_KEY=.*|SSH_HOST_CA_PUBLIC_KEY=$line|" "$env_file"
  else
    printf 'SSH_HOST_CA_PUBLIC_KEY=%s\n' "$line" >>"$env_file"
  fi
  echo "init-secrets: set SSH_HOST_CA_PUBLIC_KEY in $env_file"
fi
