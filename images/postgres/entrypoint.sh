#!/bin/sh
# First start: a new cluster in $PGDATA, a login role POSTGRES_USER with POSTGRES_PASSWORD owning
# the database POSTGRES_DB. Made in single-user mode, so nothing listens (and pg_isready says "not
# ready") until it is all there. Later starts just run the server.
set -eu
: "${POSTGRES_USER:=runs}" "${POSTGRES_DB:=runs}"
fail() { echo "opsbook postgres: $*" >&2; exit 1; }

for name in POSTGRES_USER POSTGRES_DB; do
  eval "value=\$$name"
  # shellcheck disable=SC2154 # set by eval
  echo "$value" | grep -Eq '^[a-z_][a-z0-9_]{0,62}$' \
    || fail "$name: expected a name of lower-case letters, digits and _, got '$value'"
done

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  [ -n "${POSTGRES_PASSWORD:-}" ] \
    || fail "POSTGRES_PASSWORD: not set; expected the password of $POSTGRES_USER (first start)"
  initdb --username=postgres --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" >/dev/null
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  quoted=$(printf %s "$POSTGRES_PASSWORD" | sed "s/'/''/g")
  printf "CREATE ROLE \"%s\" LOGIN PASSWORD '%s'\n" "$POSTGRES_USER" "$quoted" \
    | postgres --single -D "$PGDATA" postgres >/dev/null
  printf 'CREATE DATABASE "%s" OWNER "%s"\n' "$POSTGRES_DB" "$POSTGRES_USER" \
    | postgres --single -D "$PGDATA" postgres >/dev/null
  echo "opsbook postgres: created database $POSTGRES_DB owned by $POSTGRES_USER" >&2
fi
unset POSTGRES_PASSWORD
exec postgres -D "$PGDATA"
