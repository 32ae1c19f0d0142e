#!/usr/bin/env bash
# A private PostgreSQL cluster for development and tests (no system service, no Docker).
#
#   pg.sh up [--tls]  initdb on first use, start on 127.0.0.1:PGPORT, wait until it accepts
#                     connections, create PG_DATABASE, print its SQLAlchemy URL.
#                     --tls: a test CA and a server certificate (for 127.0.0.1 and localhost)
#                     in RUN_DIR/tls, ssl=on, and TCP clients MUST use TLS (hostssl only);
#                     the URL then carries sslmode=verify-full&sslrootcert=RUN_DIR/tls/ca.crt
#   pg.sh down        fast shutdown (immediate after PG_STOP_TIMEOUT s); idempotent
#   pg.sh status      exit 0 (and print the URL) if it runs and accepts connections
#   pg.sh url         print the SQLAlchemy URL (postgresql+psycopg://postgres@127.0.0.1:PORT/DB[?...])
#   pg.sh psql [ARG]  psql connected to PG_DATABASE
#   pg.sh logs [N]    the last N lines of the server log
#   pg.sh bindir      print the directory of the server binaries; exit 1 if none is installed
#
# Environment:
#   PGPORT            TCP port on 127.0.0.1 (default 55432)
#   PG_RUN_DIR        data, log, TLS files (default var/postgres); one cluster per run dir
#   PG_DATABASE       database created by `up` and named by `url` (default syncbus)
#   PG_BINDIR         server binaries (default: /usr/lib/postgresql/<version of the cluster,
#                     else the newest>/bin, else the directory of pg_ctl on PATH)
#   PG_OS_USER        OS user that runs the server when pg.sh runs as root (default postgres;
#                     PostgreSQL refuses to run as root). Otherwise: the current user.
#   PG_FAST           1: fsync/full_page_writes/synchronous_commit off -- fast, and data may
#                     be lost in an OS crash (the test fixture sets it; throwaway clusters only)
#   PG_START_TIMEOUT  seconds `up` waits for the server (default 60)
#   PG_STOP_TIMEOUT   seconds `down` waits for a fast shutdown (default 30)
#   PG_WATCH_PID      stop the server when that process exits (test sessions pass their pid)
#   PG_WATCH_REMOVE   1 (with PG_WATCH_PID): the watchdog also deletes PG_RUN_DIR after it
#                     stopped the server itself
#
# The superuser is `postgres`, with trust authentication on 127.0.0.1 only; no Unix socket.
# `up` on an existing run dir keeps its data, so down + up is a restart.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

# libpq reads these; pg.sh's own client calls must not be redirected by the caller's environment.
PGPORT="${PGPORT:-55432}"
unset PGHOST PGHOSTADDR PGUSER PGDATABASE PGPASSWORD PGPASSFILE PGSERVICE PGSERVICEFILE PGOPTIONS \
    PGSSLMODE PGREQUIRESSL PGSSLROOTCERT PGSSLCERT PGSSLKEY PGSSLCRL PGGSSENCMODE PGTARGETSESSIONATTRS \
    PGDATA PGCONNECT_TIMEOUT

PG_DATABASE="${PG_DATABASE:-syncbus}"
PG_OS_USER="${PG_OS_USER:-postgres}"
PG_FAST="${PG_FAST:-0}"
PG_START_TIMEOUT="${PG_START_TIMEOUT:-60}"
PG_STOP_TIMEOUT="${PG_STOP_TIMEOUT:-30}"
SUPERUSER=postgres
HOST=127.0.0.1

die() { echo "pg.sh: $*" >&2; exit 1; }

is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }

as_root() { ((EUID == 0)); }

# Run a command as the OS user that owns the cluster. `cd /`: the caller's directory may be
# unreadable for that user (a checkout under /root).
as_server() {
    if as_root; then
        (cd / && runuser -u "$PG_OS_USER" -- "$@")
    else
        "$@"
    fi
}

# --- run dir -----------------------------------------------------------------

if [[ -n "${PG_RUN_DIR:-}" ]]; then
    RUN_DIR="$(realpath -m "$PG_RUN_DIR")"
else
    RUN_DIR="$ROOT/var/postgres"
    # As root the server runs as PG_OS_USER, who may not be allowed into the checkout
    # (e.g. a clone under /root): then the default cluster lives in /var/tmp instead.
    if as_root && id -u "$PG_OS_USER" >/dev/null 2>&1 \
            && ! runuser -u "$PG_OS_USER" -- test -x "$ROOT" 2>/dev/null; then
        RUN_DIR="/var/tmp/syncbus-postgres-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
    fi
fi
DATA_DIR="$RUN_DIR/data"
LOG_DIR="$RUN_DIR/log"
LOG_FILE="$LOG_DIR/postgres.log"
TLS_DIR="$RUN_DIR/tls"
URL_FILE="$RUN_DIR/url"

# --- binaries ----------------------------------------------------------------

complete_bindir() { [[ -x "$1/postgres" && -x "$1/initdb" && -x "$1/pg_ctl" ]]; }

# PG_BINDIR; else the Debian/PGDG directory of the cluster's major version, else the newest
# one; else wherever pg_ctl on PATH really lives (with initdb and postgres next to it).
find_bindir() {
    if [[ -n "${PG_BINDIR:-}" ]]; then
        complete_bindir "$PG_BINDIR" || return 1
        echo "$PG_BINDIR"
        return 0
    fi
    local d ver want=""
    [[ -r "$DATA_DIR/PG_VERSION" ]] && want="$(cat "$DATA_DIR/PG_VERSION" 2>/dev/null || true)"
    local -a found=()
    for d in /usr/lib/postgresql/*/bin /usr/pgsql-*/bin; do
        complete_bindir "$d" || continue
        ver="${d%/bin}"
        ver="${ver##*/}"
        ver="${ver#pgsql-}"
        if [[ -n "$want" && "$ver" == "$want" ]]; then
            echo "$d"
            return 0
        fi
        found+=("$ver $d")
    done
    if ((${#found[@]})); then
        printf '%s\n' "${found[@]}" | sort -V | tail -n 1 | cut -d' ' -f2-
        return 0
    fi
    d="$(command -v pg_ctl 2>/dev/null)" || return 1
    d="$(dirname "$(realpath "$d")")"
    complete_bindir "$d" || return 1
    echo "$d"
}

need_bindir() {
    BINDIR="$(find_bindir)" || die "no PostgreSQL server found (postgres, initdb, pg_ctl in /usr/lib/postgresql/<version>/bin${PG_BINDIR:+ or PG_BINDIR=$PG_BINDIR}): run deploy/setup.sh as root, or apt-get install postgresql"
    if as_root; then
        id -u "$PG_OS_USER" >/dev/null 2>&1 \
            || die "running as root, but the OS user '$PG_OS_USER' that should run the server does not exist (it comes with the postgresql package; or set PG_OS_USER)"
    fi
}

# --- process helpers ---------------------------------------------------------

# The postmaster's pid, if it is still our server (guards against pid reuse).
server_pid() {
    local pid
    pid="$(head -n 1 "$DATA_DIR/postmaster.pid" 2>/dev/null || true)"
    is_int "$pid" || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$DATA_DIR" || return 1
    echo "$pid"
}

alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat%% *}" != Z ]]
}

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# The conninfo pg.sh's own clients use (sslmode=require when the server demands TLS).
admin_conninfo() {
    local db="$1" tls=disable
    [[ -f "$RUN_DIR/tls-enabled" ]] && tls=require
    echo "host=$HOST port=$(stored_port) user=$SUPERUSER dbname=$db sslmode=$tls connect_timeout=5"
}

accepting() {
    [[ -x "$BINDIR/psql" ]] || return 0 # pg_ctl -w already waited for "ready"
    "$BINDIR/psql" -X -q -t -A -c 'SELECT 1' "$(admin_conninfo postgres)" >/dev/null 2>&1
}

stored_port() {
    local p
    p="$(cat "$RUN_DIR/port" 2>/dev/null || true)"
    if is_int "$p"; then echo "$p"; else echo "$PGPORT"; fi
}

log_tail() {
    if [[ -s "$LOG_FILE" ]]; then
        echo "---- tail of $LOG_FILE" >&2
        tail -n "${1:-40}" "$LOG_FILE" >&2
    fi
}

# --- url ---------------------------------------------------------------------

urlencode() {
    local LC_ALL=C s="$1" out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c="${s:i:1}"
        case "$c" in
            [a-zA-Z0-9._~/-]) out+="$c" ;;
            *) printf -v c '%%%02X' "'$c"; out+="$c" ;;
        esac
    done
    printf '%s' "$out"
}

make_url() {
    local url="postgresql+psycopg://$SUPERUSER@$HOST:$(stored_port)/$(urlencode "$PG_DATABASE")"
    if [[ -f "$RUN_DIR/tls-enabled" ]]; then
        url+="?sslmode=verify-full&sslrootcert=$(urlencode "$TLS_DIR/ca.crt")"
    fi
    echo "$url"
}

cmd_url() {
    if [[ -f "$URL_FILE" ]]; then cat "$URL_FILE"; else make_url; fi
}

# --- up ----------------------------------------------------------------------

# A directory the server user owns (created by us, inside the run dir).
server_dir() {
    mkdir -p "$1"
    if as_root; then chown "$PG_OS_USER:" "$1"; fi
    chmod 700 "$1"
}

init_cluster() {
    server_dir "$DATA_DIR"
    local -a opts=(-D "$DATA_DIR" -U "$SUPERUSER" --auth=trust -E UTF8 --no-locale)
    [[ "$PG_FAST" == 1 ]] && opts+=(--no-sync)
    if ! as_server "$BINDIR/initdb" "${opts[@]}" >"$LOG_DIR/initdb.log" 2>&1; then
        cat "$LOG_DIR/initdb.log" >&2
        die "initdb of $DATA_DIR failed"
    fi
    # Our settings live in syncbus.conf, rewritten by every `up`.
    printf "\n# pg.sh: rewritten by every 'pg.sh up'\ninclude = 'syncbus.conf'\n" >>"$DATA_DIR/postgresql.conf"
}

# A string literal for postgresql.conf.
conf_str() { printf "'%s'" "${1//\'/\'\'}"; }

make_certs() {
    command -v openssl >/dev/null 2>&1 || die "openssl not found (apt-get install openssl), needed for --tls"
    mkdir -p "$TLS_DIR"
    chmod 755 "$TLS_DIR"
    if [[ -s "$TLS_DIR/ca.crt" && -s "$TLS_DIR/server.crt" && -s "$TLS_DIR/server.key" ]] \
            && openssl x509 -checkend 86400 -noout -in "$TLS_DIR/server.crt" >/dev/null 2>&1 \
            && openssl x509 -checkend 86400 -noout -in "$TLS_DIR/ca.crt" >/dev/null 2>&1; then
        return 0
    fi
    local log="$TLS_DIR/openssl.log" ext="$TLS_DIR/server.ext"
    printf '%s\n' "basicConstraints = critical, CA:FALSE" \
        "keyUsage = critical, digitalSignature, keyEncipherment" \
        "extendedKeyUsage = serverAuth" \
        "subjectAltName = IP:127.0.0.1, DNS:localhost" >"$ext"
    (
        umask 077
        set -e
        openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt" -days 3650 \
            -subj "/CN=syncbus test CA $(hostname 2>/dev/null || echo localhost)" \
            -addext "basicConstraints = critical, CA:TRUE" \
            -addext "keyUsage = critical, keyCertSign, cRLSign"
        openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" -subj "/CN=localhost"
        openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" \
            -set_serial "0x$(openssl rand -hex 16)" -days 825 -extfile "$ext" -out "$TLS_DIR/server.crt"
    ) >"$log" 2>&1 || { cat "$log" >&2; die "creating the test certificates in $TLS_DIR failed"; }
    rm -f "$TLS_DIR/server.csr" "$ext" "$log"
    chmod 644 "$TLS_DIR/ca.crt" "$TLS_DIR/server.crt"
    chmod 600 "$TLS_DIR/ca.key" "$TLS_DIR/server.key"
    if as_root; then chown "$PG_OS_USER:" "$TLS_DIR/server.key"; fi
}

write_config() {
    local tls="$1" method=host
    {
        echo "# Written by deploy/postgres/pg.sh up; edits are lost on the next up."
        echo "listen_addresses = '$HOST'"
        echo "port = $PGPORT"
        echo "unix_socket_directories = ''"
        echo "max_connections = 200"
        echo "shared_buffers = 64MB"
        echo "logging_collector = off"
        echo "log_min_messages = warning"
        if [[ "$tls" == 1 ]]; then
            echo "ssl = on"
            echo "ssl_cert_file = $(conf_str "$TLS_DIR/server.crt")"
            echo "ssl_key_file = $(conf_str "$TLS_DIR/server.key")"
        else
            echo "ssl = off"
        fi
        if [[ "$PG_FAST" == 1 ]]; then
            echo "fsync = off"
            echo "full_page_writes = off"
            echo "synchronous_commit = off"
        fi
    } >"$DATA_DIR/syncbus.conf"
    [[ "$tls" == 1 ]] && method=hostssl
    {
        echo "# Written by deploy/postgres/pg.sh up: trust on 127.0.0.1 only (local tests)."
        echo "# TYPE  DATABASE  USER  ADDRESS  METHOD"
        echo "$method all all 127.0.0.1/32 trust"
    } >"$DATA_DIR/pg_hba.conf"
    if as_root; then chown "$PG_OS_USER:" "$DATA_DIR/syncbus.conf" "$DATA_DIR/pg_hba.conf"; fi
}

start_watchdog() {
    local pid="$1" watch="$2" remove="$3"
    # Detached, so it survives this script; it only ever signals the same postmaster.
    # shellcheck disable=SC2016  # expanded by the inner bash
    setsid bash -c '
        p="$1"; w="$2"; data="$3"; grace="$4"; remove="$5"; run="$6"
        ours() { tr "\0" "\n" <"/proc/$p/cmdline" 2>/dev/null | grep -qxF -- "$data"; }
        while kill -0 "$w" 2>/dev/null && ours; do sleep 1; done
        ours || exit 0
        kill -INT "$p" 2>/dev/null || exit 0              # fast shutdown
        for _ in $(seq "$grace"); do ours || break; sleep 1; done
        if ours; then kill -QUIT "$p" 2>/dev/null; sleep 2; fi  # immediate shutdown
        if ours; then kill -KILL "$p" 2>/dev/null; sleep 1; fi
        if [ "$remove" = 1 ] && ! ours; then rm -rf -- "$run"; fi
    ' watchdog "$pid" "$watch" "$DATA_DIR" "$PG_STOP_TIMEOUT" "$remove" "$RUN_DIR" \
        </dev/null >/dev/null 2>&1 &
}

ensure_database() {
    [[ "$PG_DATABASE" == postgres ]] && return 0
    [[ -x "$BINDIR/psql" ]] || die "psql not found in $BINDIR: cannot create database $PG_DATABASE"
    local lit="${PG_DATABASE//\'/\'\'}" ident="${PG_DATABASE//\"/\"\"}" exists
    exists="$("$BINDIR/psql" -X -q -t -A -v ON_ERROR_STOP=1 "$(admin_conninfo postgres)" \
        -c "SELECT 1 FROM pg_database WHERE datname = '$lit'")" || die "cannot query $HOST:$PGPORT"
    [[ "$exists" == 1 ]] && return 0
    "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 "$(admin_conninfo postgres)" \
        -c "CREATE DATABASE \"$ident\"" >/dev/null || die "CREATE DATABASE $PG_DATABASE failed"
}

cmd_up() {
    local tls=0
    while (($#)); do
        case "$1" in
            --tls) tls=1 ;;
            *) die "unknown option for up: $1 (usage: pg.sh up [--tls])" ;;
        esac
        shift
    done
    is_int "$PGPORT" || die "PGPORT must be a number, got '$PGPORT'"
    is_int "$PG_START_TIMEOUT" || die "PG_START_TIMEOUT must be a number of seconds"
    need_bindir

    (umask 022 && mkdir -p "$RUN_DIR") # as root, the server user must be able to enter it
    if as_root && ! runuser -u "$PG_OS_USER" -- test -x "$RUN_DIR" 2>/dev/null; then
        die "the server runs as '$PG_OS_USER', who cannot enter $RUN_DIR (or a parent): set PG_RUN_DIR to a directory it can reach, e.g. /var/tmp/syncbus-postgres"
    fi
    server_dir "$LOG_DIR"

    local pid
    if pid="$(server_pid)"; then
        local running_tls=0
        [[ -f "$RUN_DIR/tls-enabled" ]] && running_tls=1
        [[ "$(stored_port)" == "$PGPORT" ]] \
            || die "a server is already running from $RUN_DIR on port $(stored_port) (pid $pid)"
        ((running_tls == tls)) \
            || die "a server is already running from $RUN_DIR with TLS $( ((running_tls)) && echo on || echo off); run pg.sh down first"
    else
        if [[ -f "$DATA_DIR/PG_VERSION" ]]; then
            local have want
            have="$(cat "$DATA_DIR/PG_VERSION")"
            want="$("$BINDIR/postgres" --version)"
            want="${want##*) }"
            want="${want%%.*}"
            [[ "$have" == "$want" ]] \
                || die "$DATA_DIR was created by PostgreSQL $have but $BINDIR is PostgreSQL $want: set PG_BINDIR, or delete $RUN_DIR (make clean) to start afresh"
        else
            rm -rf "$DATA_DIR"
            init_cluster
        fi
        port_in_use "$PGPORT" && die "port $PGPORT is already in use (set PGPORT)"
        rm -f "$RUN_DIR/tls-enabled"
        if ((tls)); then make_certs; fi
        write_config "$tls"
        echo "$PGPORT" >"$RUN_DIR/port"
        if ((tls)); then : >"$RUN_DIR/tls-enabled"; fi
        : >"$LOG_FILE.tmp" && mv "$LOG_FILE.tmp" "$LOG_FILE"
        if as_root; then chown "$PG_OS_USER:" "$LOG_FILE"; fi
        # pg_ctl puts the postmaster in its own session (a Ctrl-C here does not reach it)
        # and -w waits until it accepts connections.
        if ! as_server "$BINDIR/pg_ctl" -D "$DATA_DIR" -l "$LOG_FILE" -w -t "$PG_START_TIMEOUT" start \
                >"$LOG_DIR/pg_ctl.log" 2>&1; then
            cat "$LOG_DIR/pg_ctl.log" >&2
            log_tail
            cmd_down >/dev/null 2>&1 || true
            die "the server did not start on $HOST:$PGPORT within ${PG_START_TIMEOUT}s (log: $LOG_FILE)"
        fi
        pid="$(server_pid)" || { log_tail; die "the server exited during startup (log: $LOG_FILE)"; }
        if [[ -n "${PG_WATCH_PID:-}" ]]; then
            is_int "$PG_WATCH_PID" || die "PG_WATCH_PID must be a pid"
            start_watchdog "$pid" "$PG_WATCH_PID" "${PG_WATCH_REMOVE:-0}"
        fi
    fi

    local deadline=$((SECONDS + PG_START_TIMEOUT))
    until accepting; do
        if ! alive "$pid"; then
            log_tail
            die "the server exited during startup (log: $LOG_FILE)"
        fi
        if ((SECONDS >= deadline)); then
            log_tail
            cmd_down >/dev/null 2>&1 || true
            die "the server did not accept connections on $HOST:$PGPORT within ${PG_START_TIMEOUT}s"
        fi
        sleep 0.2
    done
    ensure_database
    make_url >"$URL_FILE"
    cat "$URL_FILE"
}

# --- down / status / psql ----------------------------------------------------

cmd_down() {
    local pid
    pid="$(server_pid)" || return 0
    BINDIR="$(find_bindir)" || BINDIR=""
    if [[ -n "$BINDIR" ]] && as_server "$BINDIR/pg_ctl" -D "$DATA_DIR" -m fast -w -t "$PG_STOP_TIMEOUT" stop \
            >/dev/null 2>&1; then
        return 0
    fi
    kill -INT "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + PG_STOP_TIMEOUT))
    while alive "$pid"; do
        if ((SECONDS >= deadline)); then
            echo "pg.sh: server $pid ignored a fast shutdown for ${PG_STOP_TIMEOUT}s, killing it" >&2
            kill -QUIT "$pid" 2>/dev/null || true
            sleep 2
            kill -KILL "$pid" 2>/dev/null || true
            while alive "$pid"; do sleep 0.1; done
            break
        fi
        sleep 0.1
    done
}

cmd_status() {
    local pid
    if pid="$(server_pid)"; then
        BINDIR="$(find_bindir)" || BINDIR=""
        if [[ -n "$BINDIR" ]] && accepting; then
            echo "running $(cmd_url) (pid $pid, run dir $RUN_DIR)"
            return 0
        fi
        echo "starting or unhealthy: pid $pid does not accept connections on $HOST:$(stored_port)"
        return 1
    fi
    echo "stopped ($RUN_DIR)"
    return 1
}

cmd_psql() {
    need_bindir
    [[ -x "$BINDIR/psql" ]] || die "psql not found in $BINDIR"
    local conn
    conn="host=$HOST port=$(stored_port) user=$SUPERUSER dbname='${PG_DATABASE//\'/\\\'}'"
    if [[ -f "$RUN_DIR/tls-enabled" ]]; then
        conn+=" sslmode=verify-full sslrootcert='${TLS_DIR//\'/\\\'}/ca.crt'"
    fi
    exec "$BINDIR/psql" "$conn" "$@"
}

cmd="${1:-}"
(($#)) && shift
case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    url) cmd_url ;;
    psql) cmd_psql "$@" ;;
    logs) log_tail "${1:-100}" 2>&1 ;;
    bindir) find_bindir ;;
    *)
        echo "usage: $0 {up [--tls]|down|status|url|psql [ARGS]|logs [N]|bindir}" >&2
        exit 2
        ;;
esac
