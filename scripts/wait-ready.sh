#!/usr/bin/env bash
# Wait until the hub answers through the proxy, then say how to log in.
#
#   scripts/wait-ready.sh ENV_FILE [DEADLINE_SECONDS]
#
# Asks the proxy on this machine (HUB_BIND_IP:HUB_PORT) under the public URL's host name, so that
# an https hub is checked with the certificate browsers get: against the demo authority with
# TLS_MODE=self-signed; with TLS_MODE=files the certificate was checked by make up
# (init-secrets.sh), and this only waits for an answer.
set -euo pipefail
env_file=$1
deadline=$((SECONDS + ${2:-180}))
setting() { sed -n "s/^$1=//p" "$env_file" | tail -n 1; }
ip=$(setting HUB_BIND_IP)
ip=${ip:-127.0.0.1}
[ "$ip" = 0.0.0.0 ] && ip=127.0.0.1
port=$(setting HUB_PORT)
port=${port:-8000}
http_port=$(setting HUB_HTTP_PORT)
http_port=${http_port:-8080}
mode=$(setting TLS_MODE)
mode=${mode:-off}
ca=$(cd "$(dirname "$env_file")" && pwd)/secrets/tls/ca.crt
callback=$(setting OAUTH_CALLBACK_URL)
url=${callback%/hub/oauth_callback}
host=$(printf '%s\n' "$url" | sed -E 's#^[a-z]+://([^/:]*|\[[^]]*\]).*#\1#')

case $mode in
  off) probe=(curl -fsS -o /dev/null "http://$ip:$port/hub/health") ;;
  self-signed) probe=(curl -fsS -o /dev/null --cacert "$ca" --resolve "$host:$port:$ip"
    "https://$host:$port/hub/health") ;;
  *) probe=(curl -fsS -o /dev/null --insecure --resolve "$host:$port:$ip"
    "https://$host:$port/hub/health") ;;
esac

until "${probe[@]}" 2>/dev/null; do
  if [ $SECONDS -ge $deadline ]; then
    echo "The hub did not answer at ${probe[-1]} in time. Look at: make logs" >&2
    exit 1
  fi
  sleep 1
done

cat <<TXT

Opsbook is up: $url
  runbooks in JupyterLab: $url  (open runbooks/index.ipynb)
  status page of runs:    $url/services/runs/
  Prometheus (demo):      http://127.0.0.1:$(setting PROMETHEUS_PORT)
TXT

if [ "$mode" != off ]; then
  cat <<TXT
  plain http://$ip:$http_port is redirected to https
TXT
fi
if [ "$mode" = self-signed ]; then
  fingerprint=$(openssl x509 -noout -fingerprint -sha256 -in "$ca" 2>/dev/null | cut -d= -f2 || true)
  cat <<TXT

HTTPS uses the demo certificate authority make up generated. Tell your browser to trust it once:
  $ca${fingerprint:+
  (SHA-256 fingerprint $fingerprint)}
  Firefox: Settings > Privacy & Security > Certificates > View Certificates > Authorities > Import
  Chrome, Chromium: Settings > Privacy and security > Security > Manage certificates >
    Authorities (Linux) > Import, tick "Trust this certificate for identifying websites"
  this whole machine (Debian, Ubuntu):
    sudo cp $ca /usr/local/share/ca-certificates/opsbook-demo.crt; sudo update-ca-certificates
  curl: curl --cacert $ca $url/hub/health
The demo sign-in page ($(setting IDP_ISSUER)) uses the same authority.
TXT
fi

cat <<TXT

Sign in through the demo identity provider as one of
  alice    admins, ops, oncall   (admin page, everyone's servers; gets a server)
  bob      ops, oncall           (gets a server)
  erin     ops                   (gets a server)
  carol    viewers               (signs in, no server)
  mallory  no group              (refused)
Every demo account's password is DEMO_PASSWORD in $env_file:
  sed -n 's/^DEMO_PASSWORD=//p' $env_file

make logs    follow the logs        make down    stop (volumes are kept)
TXT
