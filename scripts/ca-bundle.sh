#!/usr/bin/env bash
# Which CA bundle the images trust (EXTRA_CA_CERTS), and what to say when a build fails on a TLS
# handshake. Behind a TLS-intercepting proxy, the proxy's CA is in this machine's bundle but not
# in Debian's; without it every pip and npm download in a build fails, and the error (npm's
# SELF_SIGNED_CERT_IN_CHAIN, pip's CERTIFICATE_VERIFY_FAILED) does not name the setting.
#
#   scripts/ca-bundle.sh choose ENV_FILE
#       prints the PEM file the images are built to trust, or an empty line for Debian's CAs
#       only, and says on stderr which and why: EXTRA_CA_CERTS from the environment or ENV_FILE;
#       "none": Debian's only; unset: this machine's own bundle, where one is.
#   scripts/ca-bundle.sh hint LOG IMAGE TRUSTED
#       when LOG (a failed build's output) shows a TLS handshake refused for an unknown CA, says
#       which setting to use (exit 0); otherwise says nothing (exit 1).
set -euo pipefail

# Where Linux distributions keep the system bundle (Go's crypto/x509 looks in the same places):
# Debian, Ubuntu, Alpine; Fedora, RHEL 6; openSUSE; OpenELEC; RHEL/CentOS 7+; Alpine, macOS, BSD.
HOST_BUNDLES=(
  /etc/ssl/certs/ca-certificates.crt
  /etc/pki/tls/certs/ca-bundle.crt
  /etc/ssl/ca-bundle.pem
  /etc/pki/tls/cacert.pem
  /etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem
  /etc/ssl/cert.pem
)
# What a TLS client says when the server's chain ends at a CA it does not trust: npm/Node.js,
# pip/requests/Python's ssl, curl, apt (GnuTLS), git, Go.
TLS_REFUSED='SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|UNABLE_TO_VERIFY_LEAF_SIGNATURE|DEPTH_ZERO_SELF_SIGNED_CERT|self[- ]signed certificate in certificate chain|unable to get local issuer certificate|CERTIFICATE_VERIFY_FAILED|certificate verify failed|SSL certificate problem|server certificate verification failed|Certificate verification failed|certificate is NOT trusted|certificate signed by unknown authority'

choose() {
  local env_file=$1 value=${EXTRA_CA_CERTS:-} from=environment bundle
  if [ -z "$value" ] && [ -f "$env_file" ]; then
    value=$(sed -n 's/^EXTRA_CA_CERTS=//p' "$env_file" | tail -n 1)
    from=$env_file
  fi
  if [ "$value" = none ]; then
    echo "build: EXTRA_CA_CERTS=none ($from): the images trust Debian's CAs only" >&2
    echo
  elif [ -n "$value" ]; then
    echo "build: the images trust EXTRA_CA_CERTS=$value ($from)" >&2
    echo "$value"
  else
    for bundle in "${HOST_BUNDLES[@]}"; do
      if [ -r "$bundle" ] && grep -q "BEGIN CERTIFICATE" "$bundle"; then
        echo "build: EXTRA_CA_CERTS is not set: the images trust what this machine trusts," \
          "$bundle (EXTRA_CA_CERTS=none: Debian's CAs only)" >&2
        echo "$bundle"
        return
      fi
    done
    echo "build: EXTRA_CA_CERTS is not set and this machine has no CA bundle in the usual" \
      "places: the images trust Debian's CAs only" >&2
    echo
  fi
}

hint() {
  local log=$1 image=$2 trusted=${3:-"Debian's CAs only"} seen
  seen=$(grep -m 1 -o -i -E "$TLS_REFUSED" "$log") || return 1
  cat >&2 <<TXT

The build of $image failed on a TLS handshake ($seen):
a server's certificate comes from a CA the image does not trust (a TLS-intercepting proxy's, or an
internal registry's). The images trust $trusted.
Set EXTRA_CA_CERTS to a PEM bundle that holds that CA, in the environment or in .env, and run
make up again (README: "Behind a TLS-intercepting proxy, or with an internal CA").
TXT
}

case ${1:-} in
  choose) choose "${2:?usage: ca-bundle.sh choose ENV_FILE}" ;;
  hint) hint "${2:?usage: ca-bundle.sh hint LOG IMAGE TRUSTED}" "${3:?}" "${4:-}" ;;
  *) echo "usage: ca-bundle.sh choose ENV_FILE | hint LOG IMAGE TRUSTED" >&2; exit 2 ;;
esac
