# A demo fleet host (opsbook/fleet-web, opsbook/fleet-db): sshd for Ansible, Debian's node exporter
# for Prometheus, and version 1 of the stack's demo packages, updated only from the fleet's own
# package repository (pkgrepo). Build context: images/fleet/.
#
#   DOCKER_BUILDKIT=0 docker build --build-arg STACK=web -t opsbook/fleet-web:0.1.0 \
#     -f images/fleet/host.Dockerfile images/fleet
#
# Runtime contract: images/fleet/README.md.

# The demo packages, built from packages/*.pkg (the same stage as in repo.Dockerfile).
FROM opsbook/base:bookworm AS debs
COPY build-debs.sh /usr/local/bin/opsbook-build-debs
COPY packages /src/packages
RUN opsbook-build-debs /src/packages /debs

FROM opsbook/base:bookworm
# No init system: packages must not try to start services while they install (policy-rc.d).
# python3-apt is what Ansible's apt module needs (it would install it on first use otherwise).
# No host key is baked into the image: each host gets its own, with a host certificate, from the
# secrets folder (scripts/init-secrets.sh) at start.
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d \
 && chmod 0755 /usr/sbin/policy-rc.d \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      openssh-server python3 python3-apt sudo prometheus-node-exporter procps iproute2 \
 && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*

# The user Ansible comes in as: SSH certificates of Opsbook's user CA only (no password: "*", no
# authorized key), passwordless sudo. /etc/ssh/opsbook: where the user CA and the host's key and
# certificate are mounted (read-only); sshd's files are made from them at each start.
COPY common/sshd_config /etc/ssh/sshd_config.d/opsbook.conf
COPY common/opsbook-sshd-prepare common/opsbook-healthcheck /usr/local/sbin/
RUN useradd --uid 1001 --user-group --create-home --shell /bin/bash opsbook \
 && usermod --password '*' opsbook \
 && echo 'opsbook ALL=(ALL:ALL) NOPASSWD: ALL' >/etc/sudoers.d/opsbook \
 && chmod 0440 /etc/sudoers.d/opsbook \
 && visudo -cq \
 && install -d -m 0755 /etc/opsbook /etc/ssh/opsbook /etc/ssh/opsbook/host /etc/ssh/opsbook_principals

COPY host/opsbook-fleet-start host/opsbook-node-textfile host/opsbook-exporter /usr/local/sbin/
COPY host/apt-opsbook.conf /etc/apt/apt.conf.d/90opsbook-textfile

ARG STACK
# Version 1 of the stack's demo packages, and no apt source at all: the start script writes the
# only one at boot, the fleet's repository in the suite of OPSBOOK_ENVIRONMENT (no host reaches
# the internet for a patch). The install asked for a reboot; the image has not "booted".
COPY --from=debs /debs /tmp/debs
RUN case "$STACK" in \
      web|db) ;; \
      *) echo "STACK: expected web or db (--build-arg STACK=web), got '$STACK'" >&2; exit 1 ;; \
    esac \
 && cd /tmp/debs \
 && dpkg -i $(cat "baseline-$STACK.list") \
 && rm -rf /tmp/debs /run/reboot-required /run/reboot-required.pkgs \
 && rm -f /etc/apt/sources.list /etc/apt/sources.list.d/debian.sources \
 && test -z "$(ls /etc/apt/sources.list.d/)" \
 && echo "$STACK" >/etc/opsbook/stack

ENV OPSBOOK_STACK=$STACK
LABEL org.opencontainers.image.title="opsbook/fleet-$STACK" \
      org.opencontainers.image.description="Opsbook demo fleet host, stack $STACK"
EXPOSE 22 9100
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/sbin/opsbook-healthcheck", "9100", "/"]
ENTRYPOINT ["tini", "-g", "--"]
CMD ["/usr/local/sbin/opsbook-fleet-start"]
