# Source this file (bash) to get a throw-away PostgreSQL server for the tests of random-nas's shared
# study: it installs Debian's `postgresql` package when no server binaries are present, starts a
# new cluster in a temporary folder on 127.0.0.1 (a free port, trust authentication: nothing but
# local tests reach it), creates a new database, exports DLSTRAT_TEST_POSTGRES_URL and stops the
# server (and removes the folder) when the sourcing shell exits. .ci/run sources it; so can you:
#     source .ci/postgres.sh && python -m pytest -q tests/test_study.py -k postgres
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
if [ -z "$(pg_bin)" ]; then
    started=$(date +%s)
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    echo "postgres: installed Debian's postgresql in $(( $(date +%s) - started )) s"
fi
PG_BIN=$(pg_bin)
PG_DIR=$(mktemp -d)
PG_PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if [ "$(id -u)" = 0 ]; then  # the server refuses to run as root: as the package's postgres user
    chown postgres "$PG_DIR"
    pg_as() { su postgres -s /bin/sh -c "$*"; }
else
    pg_as() { sh -c "$*"; }
fi
pg_as "$PG_BIN/initdb -D $PG_DIR/data -A trust -U postgres" >/dev/null
pg_as "$PG_BIN/pg_ctl -D $PG_DIR/data -l $PG_DIR/log -w -o \"-h 127.0.0.1 -p $PG_PORT -k $PG_DIR\" start" >/dev/null
trap 'pg_as "$PG_BIN/pg_ctl -D $PG_DIR/data -m fast -w stop" >/dev/null; rm -rf "$PG_DIR"' EXIT
PG_DB="dlstrat_test_$(date +%s)_$$"
pg_as "$PG_BIN/createdb -h 127.0.0.1 -p $PG_PORT -U postgres $PG_DB"
export DLSTRAT_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$PG_PORT/$PG_DB"
echo "postgres: $DLSTRAT_TEST_POSTGRES_URL (stopped on exit)"
