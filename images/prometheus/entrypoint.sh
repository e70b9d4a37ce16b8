#!/bin/bash
# Start Prometheus (runs as the image's prometheus user, under tini).
#
# Before Prometheus starts, this writes the hub job's two files in /run/prometheus:
#   hub-metrics-token  HUB_METRICS_TOKEN, mode 0600 (Prometheus reads it at each scrape)
#   hub-targets.json   [HUB_METRICS_TARGET], or no target at all when there is no token
# The token is never printed; it is also removed from Prometheus's own environment.
# Arguments are passed on to Prometheus after the image's flags.
set -euo pipefail
exec 2>&1 # one log stream: Prometheus logs to stderr, the container log reads stdout

say() { echo "opsbook prometheus: $*"; }
fail() {
  say "$*"
  exit 1
}

run_dir=/run/prometheus
data_dir=/var/lib/prometheus
target=${HUB_METRICS_TARGET:-hub:8081}
retention=${PROMETHEUS_RETENTION:-7d}

[[ $target =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5}$ ]] ||
  fail "HUB_METRICS_TARGET: expected host:port such as hub:8081, got '$target'"
[[ $retention =~ ^([0-9]+(ms|s|m|h|d|w|y))+$ ]] ||
  fail "PROMETHEUS_RETENTION: expected a duration such as 7d or 12h, got '$retention'"
[ -w "$run_dir" ] ||
  fail "$run_dir is not writable by uid $(id -u): leave the image's folder, or mount a tmpfs" \
    "owned by it ($run_dir:uid=$(id -u),gid=$(id -g),mode=0700)"
[ -w "$data_dir" ] ||
  fail "$data_dir is not writable by uid $(id -u): give the volume to $(id -u):$(id -g)"

umask 077
token=${HUB_METRICS_TOKEN:-}
unset HUB_METRICS_TOKEN
if [ -n "$token" ]; then
  # Printable ASCII without spaces: what JupyterHub tokens are, and what a header can carry.
  [[ $token =~ ^[!-~]+$ ]] ||
    fail "HUB_METRICS_TOKEN: expected a token of printable characters without spaces (got ${#token} characters)"
  printf '%s' "$token" >"$run_dir/hub-metrics-token.new"
  mv -f "$run_dir/hub-metrics-token.new" "$run_dir/hub-metrics-token"
  printf '[{"targets": ["%s"]}]\n' "$target" >"$run_dir/hub-targets.json"
  say "scraping the hub at http://$target/hub/metrics with the token in HUB_METRICS_TOKEN (${#token} characters)"
else
  : >"$run_dir/hub-metrics-token"
  echo '[]' >"$run_dir/hub-targets.json"
  say "warning: HUB_METRICS_TOKEN is not set: the hub job has no target (JupyterHub's metrics are not scraped)"
fi
unset token

exec prometheus \
  --config.file=/etc/prometheus/prometheus.yml \
  --storage.tsdb.path="$data_dir" \
  --storage.tsdb.retention.time="$retention" \
  --web.listen-address=:9090 \
  "$@"
