#!/bin/bash
# Start Alertmanager (runs as the image's prometheus user, under tini). Arguments are passed on to
# Alertmanager after the image's flags.
set -euo pipefail
exec 2>&1 # one log stream: Alertmanager logs to stderr, the container log reads stdout

data_dir=/var/lib/alertmanager
[ -w "$data_dir" ] || {
  echo "opsbook alertmanager: $data_dir is not writable by uid $(id -u): give the volume to $(id -u):$(id -g)"
  exit 1
}

# Silences and notification log live in $data_dir: written every maintenance interval and at a
# clean stop (SIGTERM). The default interval is 15 minutes; a crash would lose the silences made
# since the last write, so they are written every 30 seconds.
exec prometheus-alertmanager \
  --config.file=/etc/alertmanager/alertmanager.yml \
  --storage.path="$data_dir" \
  --data.maintenance-interval=30s \
  --web.listen-address=:9093 \
  --cluster.listen-address= \
  "$@"
