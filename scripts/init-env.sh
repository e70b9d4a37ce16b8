#!/usr/bin/env bash
# Create an env file from .env.example with generated secrets, or fill the secrets an existing one
# lacks (an upgrade may add one). Never prints a secret.
#
#   scripts/init-env.sh FILE [NAME=VALUE ...]   overrides are applied only when FILE is created
set -euo pipefail
cd "$(dirname "$0")/.."
file=$1
shift

random_hex() { head -c "$1" /dev/urandom | od -An -vtx1 | tr -d ' \n'; }
# Letters and digits only, so the password survives any shell or form.
random_word() { LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c "$1"; }

set_value() { # NAME VALUE: replace the NAME= line, or append one
  local name=$1 value=$2
  if grep -q "^$name=" "$file"; then
    value=$(printf '%s' "$value" | sed 's/[&|\\]/\\&/g') # literal in sed's replacement
    sed -i "s|^$name=.*|$name=$value|" "$file"
  else
    printf '%s=%s\n' "$name" "$value" >>"$file"
  fi
}

if [ ! -f "$file" ]; then
  mkdir -p "$(dirname "$file")"
  (umask 077 && cp .env.example "$file")
  for override in "$@"; do set_value "${override%%=*}" "${override#*=}"; done
  echo "created $file with generated secrets"
fi
chmod 600 "$file"

generated() { # NAME GENERATOR ARG: fill NAME when empty
  grep -q "^$1=..*" "$file" || set_value "$1" "$("$2" "$3")"
}
generated HUB_COOKIE_SECRET random_hex 32
generated JUPYTERHUB_CRYPT_KEY random_hex 32
generated CONFIGPROXY_AUTH_TOKEN random_hex 32
generated HUB_METRICS_TOKEN random_hex 32
generated RUNS_SERVICE_TOKEN random_hex 32
generated OAUTH_CLIENT_SECRET random_hex 24
generated IDP_COOKIE_SECRET random_hex 32
generated DEMO_PASSWORD random_word 16
