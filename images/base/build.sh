#!/usr/bin/env bash
# Build opsbook/base: Debian bookworm plus the organisation's CA bundle.
#
# The Debian root comes from `docker pull debian:bookworm-slim` where a registry answers, and
# otherwise from debootstrap against Debian's package mirror (air-gapped or registry-less
# machines). Either way it is tagged opsbook/debian:bookworm, and every image of the project starts
# from opsbook/base, built on it here. Nothing is rebuilt when the tags already exist, unless
# FORCE=1.
#
# Settings (environment):
#   EXTRA_CA_CERTS   PEM bundle to trust at build and run time (TLS-intercepting proxies, internal CAs)
#   DEBIAN_MIRROR    mirror for debootstrap (default http://deb.debian.org/debian)
#   DOCKER           docker client to use (default docker)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
docker=${DOCKER:-docker}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root_tag=opsbook/debian:bookworm
base_tag=opsbook/base:bookworm
export DOCKER_BUILDKIT=0

have_image() { "$docker" image inspect "$1" >/dev/null 2>&1; }

# The settings debian:bookworm-slim ships, so that both roots give images of the same size: apt
# keeps no caches or translations, dpkg installs no documentation or man pages.
slim_like_official() {
  local dir=$1
  cat >"$dir/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  echo 'Acquire::Languages "none";' >"$dir/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' >"$dir/etc/apt/apt.conf.d/docker-gzip-indexes"
  echo 'APT::AutoRemove::SuggestsImportant "false";' >"$dir/etc/apt/apt.conf.d/docker-autoremove-suggests"
  cat >"$dir/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
DPKG
  find "$dir/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
  rm -rf "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/* \
    "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
}

debootstrap_root() {
  command -v debootstrap >/dev/null || {
    echo "build base: no registry answered and debootstrap is not installed (apt-get install debootstrap)" >&2
    exit 1
  }
  local dir
  dir=$(mktemp -d /tmp/opsbook-rootfs.XXXXXX)
  trap 'rm -rf "$dir"' RETURN
  echo "build base: debootstrap bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$dir.log" 2>&1 || {
    tail -20 "$dir.log" >&2
    exit 1
  }
  rm -f "$dir.log"
  slim_like_official "$dir"
  tar -C "$dir" -c . | "$docker" import - "$root_tag" >/dev/null
}

if [ "${FORCE:-0}" = 1 ] || ! have_image "$root_tag"; then
  if timeout 60 "$docker" pull debian:bookworm-slim >/dev/null 2>&1; then
    echo "build base: using debian:bookworm-slim from the registry"
    "$docker" tag debian:bookworm-slim "$root_tag"
  else
    debootstrap_root
  fi
fi

# The build context gets the CA bundle (or an empty file) under a fixed name.
ca_copy="$here/extra-ca-certs.pem"
if [ -n "${EXTRA_CA_CERTS:-}" ]; then
  [ -r "$EXTRA_CA_CERTS" ] || { echo "EXTRA_CA_CERTS: cannot read '$EXTRA_CA_CERTS' (expected a PEM file)" >&2; exit 1; }
  grep -q "BEGIN CERTIFICATE" "$EXTRA_CA_CERTS" || { echo "EXTRA_CA_CERTS: '$EXTRA_CA_CERTS' holds no PEM certificate" >&2; exit 1; }
  cp "$EXTRA_CA_CERTS" "$ca_copy"
else
  : >"$ca_copy"
fi
"$docker" build -q -t "$base_tag" "$here" >/dev/null
echo "build base: $base_tag ready"
