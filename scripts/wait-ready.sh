#!/usr/bin/env bash
# Wait until the hub answers through the proxy, then say how to log in.
#
#   scripts/wait-ready.sh ENV_FILE [DEADLINE_SECONDS]
set -euo pipefail
env_file=$1
deadline=$((SECONDS + ${2:-180}))
setting() { sed -n "s/^$1=//p" "$env_file" | tail -n 1; }
ip=$(setting HUB_BIND_IP)
ip=${ip:-127.0.0.1}
[ "$ip" = 0.0.0.0 ] && ip=127.0.0.1
url="http://$ip:$(setting HUB_PORT)"

until curl -fsS -o /dev/null "$url/hub/health" 2>/dev/null; do
  if [ $SECONDS -ge $deadline ]; then
    echo "The hub did not answer at $url/hub/health in time. Look at: make logs" >&2
    exit 1
  fi
  sleep 1
done

cat <<TXT

Opsbook is up: $url
  runbooks in JupyterLab: $url  (open runbooks/index.ipynb)
  status page of runs:    $url/services/runs/
  Prometheus (demo):      http://127.0.0.1:$(setting PROMETHEUS_PORT)

Sign in through the demo identity provider as one of
  alice    admins, ops, oncall   (hub admin, gets a server)
  bob      ops, oncall           (gets a server)
  erin     ops                   (gets a server)
  carol    viewers               (signs in, no server)
  mallory  no group              (refused)
Every demo account's password is DEMO_PASSWORD in $env_file:
  sed -n 's/^DEMO_PASSWORD=//p' $env_file

make logs    follow the logs        make down    stop (volumes are kept)
TXT
