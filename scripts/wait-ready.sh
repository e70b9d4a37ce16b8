#!/usr/bin/env bash
# Wait until the hub answers through the proxy, then say how to log in. A service that fails to
# start (it exited, or keeps restarting: a bad setting stops the hub and the runs service with one
# line naming it) ends the wait at once, with that service's name and its last log lines; at the
# deadline, the same for every service not running healthy (else the hub's and the proxy's).
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

project=$(setting COMPOSE_PROJECT_NAME)
project=${project:-opsbook}
# Restarts (since this wait began) before a service counts as failed: one may be a dependency
# that was not up yet.
restarts_failed=2

# "id service state restarts health" for each of the deployment's containers (the ones compose
# started; engineers' containers are the hub's, not compose's).
containers() {
  local ids
  ids=$(docker ps -a -q --filter "label=com.docker.compose.project=$project")
  [ -n "$ids" ] || return 0
  # A restarting container's state has no Health key at all: `index`, not `.State.Health`. A
  # container removed since `ps` is left out (its error is not ours to print).
  # shellcheck disable=SC2086 # one argument per id
  docker inspect --format '{{.Id}} {{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.RestartCount}} {{with index .State "Health"}}{{.Status}}{{else}}-{{end}}' $ids 2>/dev/null || true
}

# Lines of containers() that failed: exited, or restarted again and again since `baseline`.
crashed() {
  awk -v n=$restarts_failed 'NR == FNR { before[$1] = $4; next }
    $3 == "exited" || $3 == "dead" || $4 - before[$1] >= n' <(echo "$baseline") -
}
not_healthy() { awk '$3 != "running" || ($5 != "healthy" && $5 != "-")'; }

show_logs() { # lines of containers(): each service's name, state and last log lines
  local id service state restarts health
  while read -r id service state restarts health; do
    echo "service $service ($state, restarted $restarts times, health $health), its last log lines:" >&2
    docker logs --tail 20 "$id" 2>&1 | sed 's/^/  | /' >&2
  done
  echo "All logs: make logs" >&2
}

baseline=$(containers)
until "${probe[@]}" 2>/dev/null; do
  failed=$(containers | crashed || true)
  if [ -n "$failed" ]; then
    echo "The deployment did not start: $(awk '{print $2}' <<<"$failed" | xargs) failed." >&2
    show_logs <<<"$failed"
    exit 1
  fi
  if [ $SECONDS -ge $deadline ]; then
    echo "The hub did not answer at ${probe[-1]} in time." >&2
    failed=$(containers | not_healthy || true)
    [ -n "$failed" ] || failed=$(containers | awk '$2 == "hub" || $2 == "proxy"' || true)
    show_logs <<<"$failed"
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
