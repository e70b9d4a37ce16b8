#!/bin/bash
# http-check PORT PATH: exit 0 if http://127.0.0.1:PORT/PATH answers 200, else print the status
# line and exit 1. Every image's HEALTHCHECK (it is in opsbook/base): bash's /dev/tcp needs no curl
# or wget, and a check costs a few milliseconds of CPU where starting Python or Node.js costs about
# a tenth of a second (measured on the demo stack: hub and runs 0.1 CPU-s, idp 0.24 CPU-s per check).
set -u
port=$1 path=$2
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
IFS= read -r -t 5 status <&3 || {
  echo "no answer from port $port"
  exit 1
}
status=${status%$'\r'}
[[ $status =~ ^HTTP/1\.[01]\ 200(\ |$) ]] && exit 0
echo "$status"
exit 1
