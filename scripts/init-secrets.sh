#!/usr/bin/env bash
# Generate the SSH certificate authorities and the demo hosts' keys of a deployment in
# secrets/ssh/ beside its env file, and its TLS files in secrets/tls/: only what is missing or
# stale, never printed.
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
# the singleuser image (as root, to set the owners; its entrypoint, the engineer's start script,
# is bypassed), so this machine needs no OpenSSH.
# secrets/tls/ (TLS_MODE self-signed or files; README "HTTPS"):
#   ca.key, ca.crt                      the demo certificate authority (ECDSA P-256, ten years; the
#                                       key root's alone, 0400). Browsers are told to trust ca.crt.
#   server.key, server.crt, server.names  a certificate of that authority for the public host
#                                       (OAUTH_CALLBACK_URL's), the provider's (IDP_ISSUER's),
#                                       localhost, 127.0.0.1 and idp; made again when a name
#                                       changes, the authority changes, or 30 days before its end.
#   proxy/cert.pem, key.pem             what the proxy serves (owner nobody): that certificate, or
#                                       with TLS_MODE=files the team's TLS_CERT_FILE and
#                                       TLS_KEY_FILE, checked first by the proxy image's own check
#   idp/cert.pem, key.pem               what the demo provider serves (owner 10001, its user)
#   trust/bundle.pem                    the images' CA store plus ca.crt: the hub and the runs
#                                       service verify the provider with it (SSL_CERT_FILE)
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
  docker run --rm --user 0 --network none --entrypoint sh -v "$ssh_dir:/out" \
    "opsbook/singleuser:${tag:-0.1.0}" \
    -c "$keygen" opsbook-secrets /out "$host_validity" "$runs_uid" "${hosts[@]}" |
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

# --- TLS ---
setting() { sed -n "s/^$1=//p" "$env_file" | tail -n 1; }
fail() { echo "init-secrets: $env_file: $*" >&2; exit 1; }
host_of() { printf '%s\n' "$1" | sed -E 's#^[A-Za-z]+://([^@/]*@)?(\[[^]]*\]|[^/:?#]*).*#\2#; s#^\[|\]$##g'; }
tls_dir=$secrets/tls
mode=$(setting TLS_MODE)
mode=${mode:-off}
case $mode in
  self-signed | files | off) ;;
  *) fail "TLS_MODE: expected one of self-signed, files, off, got '$mode'" ;;
esac
install -d -m 0755 "$tls_dir" "$tls_dir/proxy" "$tls_dir/idp" "$tls_dir/trust"
team=()
if [ "$mode" = files ]; then
  for name in TLS_CERT_FILE TLS_KEY_FILE; do
    path=$(setting "$name")
    case $path in
      /*) [ -f "$path" ] || fail "$name: expected an existing file (TLS_MODE is files), got '$path' (no such file)" ;;
      *) fail "$name: expected the absolute path of a PEM file (TLS_MODE is files), got '$path'" ;;
    esac
  done
  cert=$(setting TLS_CERT_FILE) key=$(setting TLS_KEY_FILE)
  # The proxy's own check (readable, a certificate and its key, the public host covered, not
  # expired), on the team's files where they are, before anything is copied.
  docker run --rm --user 0 --network none --entrypoint node \
    -e TLS_MODE=files -e "OAUTH_CALLBACK_URL=$(setting OAUTH_CALLBACK_URL)" \
    -e "OPSBOOK_TLS_CERT=$cert" -e "OPSBOOK_TLS_KEY=$key" \
    -v "$cert:$cert:ro" -v "$key:$key:ro" \
    "opsbook/proxy:${tag:-0.1.0}" /opt/proxy/tls-settings.js >/dev/null ||
    fail "TLS_CERT_FILE, TLS_KEY_FILE: not usable (above); nothing was changed"
  team=(-v "$cert:/team/cert.pem:ro" -v "$key:/team/key.pem:ro")
fi
# Names of the demo certificate: the public host, the provider's, and the local ones.
names=$(printf '%s\n' localhost 127.0.0.1 idp "$(host_of "$(setting OAUTH_CALLBACK_URL)")" \
  "$(host_of "$(setting IDP_ISSUER)")" | sed '/^$/d' | sort -u | tr '\n' ' ')

# Inside the container: $1 the tls folder, $2 the mode, then the certificate's names. Prints only
# what it made, never a key.
# shellcheck disable=SC2016 # expanded by the container's shell
tlsgen='set -eu
dir=$1 mode=$2
shift 2
cd "$dir"
umask 022
if [ "$mode" != off ]; then
  if [ ! -s ca.key ] || [ ! -s ca.crt ]; then
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout ca.key \
      -out ca.crt -days 3650 -subj "/CN=Opsbook demo CA $(date +%Y-%m-%d)" \
      -addext basicConstraints=critical,CA:TRUE,pathlen:0 -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    chmod 0400 ca.key && chmod 0444 ca.crt && rm -f server.crt
    echo "made the demo certificate authority ca.crt"
  fi
  san=""
  for name in "$@"; do
    if printf %s "$name" | grep -Eq "^[0-9]+([.][0-9]+){3}\$|:"; then
      san="$san,IP:$name"
    else
      san="$san,DNS:$name"
    fi
  done
  san=${san#,}
  if [ ! -s server.key ] || [ ! -s server.crt ] || [ "$(cat server.names 2>/dev/null)" != "$san" ] ||
    ! openssl verify -CAfile ca.crt server.crt >/dev/null 2>&1 ||
    ! openssl x509 -in server.crt -noout -checkend 2592000 >/dev/null; then
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout server.key \
      -out server.csr -subj "/CN=$1" 2>/dev/null
    printf "subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n" "$san" >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 397 \
      -extfile server.ext -out server.crt 2>/dev/null
    rm -f server.csr server.ext ca.srl
    chmod 0400 server.key && chmod 0444 server.crt
    printf "%s" "$san" >server.names
    echo "made the demo certificate for $san (restart the proxy and idp if they run)"
  fi
  install -m 0444 server.crt idp/cert.pem && install -m 0400 -o 10001 server.key idp/key.pem
fi
case $mode in
  self-signed) install -m 0444 server.crt proxy/cert.pem && install -m 0400 -o 65534 server.key proxy/key.pem ;;
  files) install -m 0444 /team/cert.pem proxy/cert.pem && install -m 0400 -o 65534 /team/key.pem proxy/key.pem ;;
  off) rm -f proxy/cert.pem proxy/key.pem ;;
esac
if [ "$mode" = off ]; then
  install -m 0444 /etc/ssl/certs/ca-certificates.crt trust/bundle.pem
else
  cat /etc/ssl/certs/ca-certificates.crt ca.crt >trust/bundle.pem && chmod 0444 trust/bundle.pem
fi'
# shellcheck disable=SC2086 # the names, one argument each
docker run --rm --user 0 --network none --entrypoint sh -v "$tls_dir:/out" "${team[@]}" \
  "opsbook/singleuser:${tag:-0.1.0}" -c "$tlsgen" opsbook-tls /out "$mode" $names |
  sed "s|^|init-secrets: $tls_dir: |"
