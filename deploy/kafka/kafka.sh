#!/usr/bin/env bash
# A real single-node Apache Kafka (KRaft) broker for development and tests.
#
#   kafka.sh fetch    download the broker jars into lib/ (idempotent, instant when done)
#   kafka.sh up       fetch if needed, format on first use, start, wait until it serves
#                     metadata, print the bootstrap address (127.0.0.1:PORT)
#   kafka.sh down     stop it (SIGTERM, then SIGKILL after KAFKA_STOP_TIMEOUT s); idempotent
#   kafka.sh status   exit 0 (and print the bootstrap) if it is running and serving
#   kafka.sh logs     print the tail of the broker log
#
# Environment:
#   KAFKA_PORT             client port (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port (default KAFKA_PORT+1)
#   KAFKA_RUN_DIR          data, logs, pid (default deploy/kafka/run); one broker per run dir
#   KAFKA_PARTITIONS       default partitions of auto-created topics (default 4)
#   KAFKA_HEAP_OPTS        JVM heap (default "-Xms128m -Xmx512m")
#   KAFKA_START_TIMEOUT    seconds `up` waits for readiness (default 60)
#   KAFKA_STOP_TIMEOUT     seconds `down` waits after SIGTERM (default 30)
#   KAFKA_WATCH_PID        if set, the broker is stopped when that process exits
#                          (test sessions pass their own pid so no broker outlives them)
#
# Secured listeners (each optional, beside the PLAINTEXT one; see README.md):
#   KAFKA_TLS_DIR              folder with ca.crt, server.crt, server.key (PEM; key in PKCS#8, unencrypted)
#   KAFKA_SSL_PORT             TLS listener that requires a client certificate signed by ca.crt (mutual TLS)
#   KAFKA_SASL_SSL_PORT        SASL over TLS: PLAIN and SCRAM-SHA-512
#   KAFKA_SASL_PLAINTEXT_PORT  SASL without TLS (PLAIN and SCRAM-SHA-512), for tests of the SASL layer alone
#   KAFKA_SASL_USERS           user:password[,user:password] known to both mechanisms; SCRAM
#                              credentials are written when the storage is formatted (first `up`)
#
# Several brokers can run at once with different ports and run dirs. `up` on an
# existing run dir keeps its data, so down + up is a broker restart.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIB="$HERE/lib"
STAMP="$LIB/.complete"
PYTHON="${KAFKA_PYTHON:-python3}"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_RUN_DIR="$(realpath -m "${KAFKA_RUN_DIR:-$HERE/run}")"
KAFKA_PARTITIONS="${KAFKA_PARTITIONS:-4}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
KAFKA_TLS_DIR="${KAFKA_TLS_DIR:-}"
KAFKA_SSL_PORT="${KAFKA_SSL_PORT:-}"
KAFKA_SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-}"
KAFKA_SASL_PLAINTEXT_PORT="${KAFKA_SASL_PLAINTEXT_PORT:-}"
KAFKA_SASL_USERS="${KAFKA_SASL_USERS:-}"

PID_FILE="$KAFKA_RUN_DIR/kafka.pid"
BOOTSTRAP_FILE="$KAFKA_RUN_DIR/bootstrap"
DATA_DIR="$KAFKA_RUN_DIR/data"
LOG_DIR="$KAFKA_RUN_DIR/logs"
CONFIG="$KAFKA_RUN_DIR/server.properties"

die() { echo "kafka.sh: $*" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH ($2)"; }

is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }

# --- fetch -------------------------------------------------------------------

pom_stamp() { sha256sum "$HERE/pom.xml" | cut -d' ' -f1; }

lib_complete() { [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(pom_stamp)" ]]; }

cmd_fetch() {
    lib_complete && return 0
    need mvn "install Maven, e.g. apt-get install maven"
    need java "install a JDK 17+, e.g. apt-get install openjdk-17-jdk-headless"
    # Parallel `up`s (several test sessions) must not fetch into lib/ at the same time.
    exec 9<"$HERE/pom.xml"
    flock -w 900 9 || die "timed out waiting for another fetch to finish"
    if ! lib_complete; then
        rm -rf "$LIB"
        mkdir -p "$LIB"
        local log="$LIB/.fetch.log"
        if ! mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies -Dkafka.lib.dir="$LIB" >"$log" 2>&1; then
            tail -n 30 "$log" >&2
            die "fetching the Kafka jars with Maven failed (full log: $log)"
        fi
        ls "$LIB"/kafka_2.13-*.jar >/dev/null 2>&1 || die "Maven finished but no kafka_2.13 jar is in $LIB"
        pom_stamp >"$STAMP"
    fi
    exec 9<&-
}

# --- process helpers ---------------------------------------------------------

# The pid in the pid file, if that process is still our broker (guards against pid reuse).
broker_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    is_int "$pid" || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "kafka.Kafka $CONFIG" || return 1
    echo "$pid"
}

# Running and not a zombie: during `up` the JVM is our child, and a child that
# died stays visible to `kill -0` until we reap it.
alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat%% *}" != Z ]]
}

stored_bootstrap() {
    if [[ -f "$BOOTSTRAP_FILE" ]]; then cat "$BOOTSTRAP_FILE"; else echo "127.0.0.1:$KAFKA_PORT"; fi
}

serving() { "$PYTHON" "$HERE/probe.py" "$1"; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

log_tail() {
    local f
    for f in "$LOG_DIR/broker.out" "$LOG_DIR/server.log"; do
        if [[ -s "$f" ]]; then
            echo "---- tail of $f" >&2
            tail -n "${1:-40}" "$f" >&2
        fi
    done
}

# --- up ----------------------------------------------------------------------

render_config() {
    sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
        -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
        -e "s|@KAFKA_DATA_DIR@|$DATA_DIR|g" \
        -e "s|@KAFKA_PARTITIONS@|$KAFKA_PARTITIONS|g" \
        "$HERE/server.properties.template" >"$CONFIG.tmp"
    render_security >>"$CONFIG.tmp"
    chmod 600 "$CONFIG.tmp"  # PLAIN passwords may be in it
    mv "$CONFIG.tmp" "$CONFIG"
}

# --- secured listeners -------------------------------------------------------

# The secured listeners asked for, as NAME:PORT words (NAME is also the security protocol).
secure_listeners() {
    [[ -n "$KAFKA_SSL_PORT" ]] && echo "SSL:$KAFKA_SSL_PORT"
    [[ -n "$KAFKA_SASL_SSL_PORT" ]] && echo "SASL_SSL:$KAFKA_SASL_SSL_PORT"
    [[ -n "$KAFKA_SASL_PLAINTEXT_PORT" ]] && echo "SASL_PLAINTEXT:$KAFKA_SASL_PLAINTEXT_PORT"
    return 0
}

sasl_wanted() { [[ -n "$KAFKA_SASL_SSL_PORT$KAFKA_SASL_PLAINTEXT_PORT" ]]; }

check_security() {
    local word port
    for word in $(secure_listeners); do
        port="${word#*:}"
        is_int "$port" || die "${word%%:*} port must be a number, got '$port'"
        port_in_use "$port" && die "port $port is already in use (${word%%:*} listener)"
    done
    if [[ -n "$KAFKA_SSL_PORT$KAFKA_SASL_SSL_PORT" ]]; then
        [[ -n "$KAFKA_TLS_DIR" ]] || die "KAFKA_SSL_PORT/KAFKA_SASL_SSL_PORT need KAFKA_TLS_DIR (ca.crt, server.crt, server.key)"
        local f
        for f in ca.crt server.crt server.key; do
            [[ -r "$KAFKA_TLS_DIR/$f" ]] || die "KAFKA_TLS_DIR: $KAFKA_TLS_DIR/$f is missing or unreadable"
        done
    fi
    if sasl_wanted; then
        [[ -n "$KAFKA_SASL_USERS" ]] || die "a SASL listener needs KAFKA_SASL_USERS (user:password[,user:password])"
        local pair
        IFS=, read -r -a pairs <<<"$KAFKA_SASL_USERS"
        for pair in "${pairs[@]}"; do
            # Both land in a JAAS line and a StorageTool argument: no quoting games.
            [[ "$pair" =~ ^[A-Za-z0-9._-]+:[A-Za-z0-9._-]{8,}$ ]] \
                || die "KAFKA_SASL_USERS: '${pair%%:*}' needs user:password of [A-Za-z0-9._-], the password 8+ long"
        done
    fi
}

# Extra server.properties lines for the secured listeners (nothing when none is asked for).
render_security() {
    local words
    words="$(secure_listeners)"
    [[ -n "$words" ]] || return 0
    local listeners="PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT"
    local advertised="PLAINTEXT://127.0.0.1:$KAFKA_PORT" protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    local word
    for word in $words; do
        listeners+=",${word%%:*}://127.0.0.1:${word#*:}"
        advertised+=",${word%%:*}://127.0.0.1:${word#*:}"
        protocols+=",${word%%:*}:${word%%:*}"
    done
    echo
    echo "# ---- secured listeners (rendered from KAFKA_TLS_DIR / KAFKA_*_PORT / KAFKA_SASL_USERS)"
    echo "listeners=$listeners"
    echo "advertised.listeners=$advertised"
    echo "listener.security.protocol.map=$protocols"
    if [[ -n "$KAFKA_TLS_DIR" ]]; then
        local tls
        tls="$(realpath "$KAFKA_TLS_DIR")"
        # PEM files as they are: Kafka reads a PEM key store (PKCS#8 key + chain) and a PEM trust store.
        cat "$tls/server.key" "$tls/server.crt" >"$KAFKA_RUN_DIR/broker-keystore.pem"
        chmod 600 "$KAFKA_RUN_DIR/broker-keystore.pem"
        echo "ssl.keystore.type=PEM"
        echo "ssl.keystore.location=$KAFKA_RUN_DIR/broker-keystore.pem"
        echo "ssl.truststore.type=PEM"
        echo "ssl.truststore.location=$tls/ca.crt"
        echo "ssl.endpoint.identification.algorithm=https"
        [[ -n "$KAFKA_SSL_PORT" ]] && echo "listener.name.ssl.ssl.client.auth=required"
    fi
    if sasl_wanted; then
        local jaas="" pair
        IFS=, read -r -a pairs <<<"$KAFKA_SASL_USERS"
        for pair in "${pairs[@]}"; do jaas+=" user_${pair%%:*}=\"${pair#*:}\""; done
        echo "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512"
        local name
        for name in sasl_ssl sasl_plaintext; do
            echo "listener.name.$name.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$jaas;"
            echo "listener.name.$name.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
        done
    fi
}

# StorageTool arguments that write the SCRAM credentials into the new cluster's metadata.
scram_args() {
    sasl_wanted || return 0
    local pair
    IFS=, read -r -a pairs <<<"$KAFKA_SASL_USERS"
    for pair in "${pairs[@]}"; do
        echo "--add-scram"
        echo "SCRAM-SHA-512=[name=${pair%%:*},password=${pair#*:}]"
    done
}

# The JVM command line as an array, so paths with spaces survive.
java_cmd() {
    local -a heap
    read -r -a heap <<<"$KAFKA_HEAP_OPTS"
    JAVA=(java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
        -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$HERE/log4j2.yaml" "-Dkafka.logs.dir=$LOG_DIR"
        -cp "$LIB/*")
}

format_storage() {
    local cluster_id
    # Kafka's own format (base64url of 16 random bytes); like Kafka, never start with '-',
    # which command-line parsers would take for an option.
    cluster_id="$("$PYTHON" -c '
import base64, uuid
while True:
    cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not cid.startswith("-"):
        print(cid)
        break
')"
    local -a scram
    mapfile -t scram < <(scram_args)
    # A short-lived tool: C1 only and the serial GC start faster and use less CPU.
    if ! java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
            "-Dlog4j2.configurationFile=$HERE/log4j2.yaml" "-Dkafka.logs.dir=$LOG_DIR" \
            -Dkafka.log.file=storage-tool.log -cp "$LIB/*" kafka.tools.StorageTool format \
            --config "$CONFIG" "--cluster-id=$cluster_id" --ignore-formatted "${scram[@]}" \
            >"$LOG_DIR/format.log" 2>&1; then
        cat "$LOG_DIR/format.log" >&2
        die "formatting $DATA_DIR failed"
    fi
}

start_watchdog() {
    local broker="$1" watch="$2"
    # Detached, so it survives this script; it only ever signals the same broker process.
    # shellcheck disable=SC2016  # expanded by the inner bash
    setsid bash -c '
        b="$1"; w="$2"; cfg="$3"; grace="$4"
        ours() { tr "\0" " " <"/proc/$b/cmdline" 2>/dev/null | grep -q -- "kafka.Kafka $cfg"; }
        while kill -0 "$w" 2>/dev/null && ours; do sleep 1; done
        ours || exit 0
        kill -TERM "$b" 2>/dev/null || exit 0
        for _ in $(seq "$grace"); do ours || exit 0; sleep 1; done
        kill -KILL "$b" 2>/dev/null || true
    ' watchdog "$broker" "$watch" "$CONFIG" "$KAFKA_STOP_TIMEOUT" </dev/null >/dev/null 2>&1 &
}

cmd_up() {
    is_int "$KAFKA_PORT" || die "KAFKA_PORT must be a number, got '$KAFKA_PORT'"
    is_int "$KAFKA_CONTROLLER_PORT" || die "KAFKA_CONTROLLER_PORT must be a number, got '$KAFKA_CONTROLLER_PORT'"
    if ! is_int "$KAFKA_PARTITIONS" || ((KAFKA_PARTITIONS == 0)); then
        die "KAFKA_PARTITIONS must be a number > 0, got '$KAFKA_PARTITIONS'"
    fi
    need java "install a JDK 17+, e.g. apt-get install openjdk-17-jdk-headless"
    need "$PYTHON" "used to probe the broker; set KAFKA_PYTHON"
    cmd_fetch
    mkdir -p "$DATA_DIR" "$LOG_DIR"

    local pid bootstrap="127.0.0.1:$KAFKA_PORT"
    if pid="$(broker_pid)"; then
        bootstrap="$(stored_bootstrap)"
        [[ "$bootstrap" == "127.0.0.1:$KAFKA_PORT" ]] \
            || die "a broker is already running from $KAFKA_RUN_DIR on $bootstrap (pid $pid)"
    else
        rm -f "$PID_FILE"
        port_in_use "$KAFKA_PORT" && die "port $KAFKA_PORT is already in use (set KAFKA_PORT)"
        port_in_use "$KAFKA_CONTROLLER_PORT" \
            && die "port $KAFKA_CONTROLLER_PORT is already in use (set KAFKA_CONTROLLER_PORT)"
        check_security
        render_config
        [[ -f "$DATA_DIR/meta.properties" ]] || format_storage
        echo "$bootstrap" >"$BOOTSTRAP_FILE"
        : >"$LOG_DIR/broker.out"
        # setsid: a Ctrl-C in the calling shell must not take the broker down;
        # `bash -c exec` keeps the pid we record equal to the JVM's pid.
        java_cmd
        # shellcheck disable=SC2016  # expanded by the inner bash
        setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' start "$PID_FILE" \
            "${JAVA[@]}" kafka.Kafka "$CONFIG" \
            </dev/null >>"$LOG_DIR/broker.out" 2>&1 &
        for _ in $(seq 50); do [[ -s "$PID_FILE" ]] && break; sleep 0.1; done
        pid="$(cat "$PID_FILE" 2>/dev/null || true)"
        is_int "$pid" || die "the broker did not start (no pid written to $PID_FILE)"
        if [[ -n "${KAFKA_WATCH_PID:-}" ]]; then
            is_int "$KAFKA_WATCH_PID" || die "KAFKA_WATCH_PID must be a pid"
            start_watchdog "$pid" "$KAFKA_WATCH_PID"
        fi
    fi

    local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
    until serving "$bootstrap"; do
        if ! alive "$pid"; then
            log_tail
            rm -f "$PID_FILE"
            die "the broker exited during startup (logs in $LOG_DIR)"
        fi
        if ((SECONDS >= deadline)); then
            log_tail
            cmd_down >/dev/null 2>&1 || true
            die "the broker did not serve metadata on $bootstrap within ${KAFKA_START_TIMEOUT}s (logs in $LOG_DIR)"
        fi
        sleep 0.2
    done
    echo "$bootstrap"
}

# --- down / status -----------------------------------------------------------

cmd_down() {
    local pid
    if ! pid="$(broker_pid)"; then
        rm -f "$PID_FILE"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
    while alive "$pid"; do
        if ((SECONDS >= deadline)); then
            echo "kafka.sh: broker $pid ignored SIGTERM for ${KAFKA_STOP_TIMEOUT}s, killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            while alive "$pid"; do sleep 0.1; done
            break
        fi
        sleep 0.1
    done
    rm -f "$PID_FILE"
}

cmd_status() {
    local pid bootstrap
    bootstrap="$(stored_bootstrap)"
    if pid="$(broker_pid)" && serving "$bootstrap"; then
        echo "running $bootstrap (pid $pid, run dir $KAFKA_RUN_DIR)"
        return 0
    fi
    if [[ -n "${pid:-}" ]]; then
        echo "starting or unhealthy: pid $pid is not serving $bootstrap"
    else
        echo "stopped ($KAFKA_RUN_DIR)"
    fi
    return 1
}

case "${1:-}" in
    fetch) cmd_fetch ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    logs) log_tail "${2:-100}" ;;
    *)
        echo "usage: $0 {fetch|up|down|status|logs}" >&2
        exit 2
        ;;
esac
