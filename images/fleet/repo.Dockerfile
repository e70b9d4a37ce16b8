# The demo fleet's Debian package repository (opsbook/pkgrepo): every demo package version in
# suite `incoming`, the ones approved for each environment in its own suite (OPSBOOK_REPO_SUITES),
# signed with a key made at the first start, served by nginx on port 80 at /debian/;
# `opsbook-repo promote --suite ENV` approves errata, run by the runs service over SSH (a
# certificate with a forced command). Build context: images/fleet/.
#
#   DOCKER_BUILDKIT=0 docker build -t opsbook/pkgrepo:0.1.0 -f images/fleet/repo.Dockerfile images/fleet
#
# Runtime contract: images/fleet/README.md.

# The demo packages, built from packages/*.pkg (the same stage as in host.Dockerfile).
FROM opsbook/base:bookworm AS debs
COPY build-debs.sh /usr/local/bin/opsbook-build-debs
COPY packages /src/packages
RUN opsbook-build-debs /src/packages /debs

FROM opsbook/base:bookworm
# No init system: packages must not try to start services while they install (policy-rc.d).
# apt-utils: apt-ftparchive; gpg, gpg-agent: signing; python3: opsbook-repo.
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d \
 && chmod 0755 /usr/sbin/policy-rc.d \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      nginx-light apt-utils gpg gpg-agent openssh-server python3 sudo procps \
 && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_* \
      /etc/nginx/sites-enabled/default /var/www/html

# The user the runs service comes in as: SSH certificates of Opsbook's user CA only (no password:
# "*", no authorized key), principal errata-<environment>, each with a forced command. Its sudo
# runs opsbook-repo's promote and nothing else (least privilege: even a shell would give no root).
# /etc/ssh/opsbook: where the user CA and the host's key and certificate are mounted (read-only);
# sshd's files are made from them at each start.
COPY common/sshd_config /etc/ssh/sshd_config.d/opsbook.conf
COPY common/opsbook-sshd-prepare common/opsbook-healthcheck /usr/local/sbin/
RUN useradd --uid 1001 --user-group --create-home --shell /bin/bash opsbook \
 && usermod --password '*' opsbook \
 && echo 'opsbook ALL=(root) NOPASSWD: /usr/local/bin/opsbook-repo promote *' >/etc/sudoers.d/opsbook \
 && chmod 0440 /etc/sudoers.d/opsbook \
 && visudo -cq \
 && install -d -m 0755 /etc/ssh/opsbook /etc/ssh/opsbook/host /etc/ssh/opsbook_principals

COPY repo/nginx.conf /etc/nginx/nginx.conf
COPY repo/opsbook-repo /usr/local/bin/opsbook-repo
COPY repo/opsbook-repo-start /usr/local/sbin/opsbook-repo-start
COPY --from=debs /debs /usr/share/opsbook-repo/debs
# /srv/repo: state (key, approvals, published repository); /export/keyrings: the public keyring.
# Both are meant to be volumes; no key is in the image.
RUN nginx -tq \
 && install -d -m 0755 /srv/repo /export/keyrings

LABEL org.opencontainers.image.title="opsbook/pkgrepo" \
      org.opencontainers.image.description="Opsbook demo fleet package repository"
EXPOSE 22 80
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/sbin/opsbook-healthcheck", "80", "/debian/dists/incoming/InRelease"]
ENTRYPOINT ["tini", "-g", "--"]
CMD ["/usr/local/sbin/opsbook-repo-start"]
