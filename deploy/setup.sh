#!/usr/bin/env bash
# The Debian packages syncbus needs, installed when missing (Debian 12; `make setup`).
#
#   deploy/setup.sh [GROUP...]          default: all groups
#   deploy/setup.sh --check [GROUP...]  only say what is missing (exit 1 if anything is)
#
#   group       checks for                         packages installed when missing     used by
#   python      python3 >= 3.11 with venv/ensurepip python3 python3-venv                 .venv (every make target)
#               (or an existing .venv/bin/python)
#   kafka       java, mvn                           openjdk-17-jre-headless maven        kafka.sh, Kafka tests
#   postgres    postgres+initdb+pg_ctl (pg.sh       postgresql openssl                   pg.sh, PostgreSQL tests
#               bindir: /usr/lib/postgresql/<v>/bin), openssl (pg.sh up --tls)
#   prometheus  promtool, amtool                    prometheus prometheus-alertmanager   alert rule tests
#   browser     chromium, chromedriver              chromium chromium-driver             console (UI) tests
#   all         every group above                                                         make setup / make test
#
# Fast when everything is there: only `command -v` and file checks, no dpkg or apt. As
# root, whatever is missing is installed with one `apt-get update` and one
# `apt-get install -y --no-install-recommends`, and one line is printed per package
# installed (apt's own output goes to a log, shown if it fails). Services those packages
# ship (postgresql's main cluster, prometheus, alertmanager) are NOT started: the tests
# run private servers on free ports, and alertmanager would take port 9093.
# Not root and something is missing: prints what to install and exits 1.
#
# Environment: PYTHON (default python3), SETUP_APT_TIMEOUT (seconds to wait for another
# apt/dpkg to finish, default 600).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PYTHON="${PYTHON:-python3}"
APT_TIMEOUT="${SETUP_APT_TIMEOUT:-600}"
ALL_GROUPS=(python kafka postgres prometheus browser)

die() { echo "setup.sh: $*" >&2; exit 1; }

# --- checks: each adds "package<TAB>what for" lines to MISSING ----------------

MISSING=()
missing() { MISSING+=("$1"$'\t'"$2"); }

has() { command -v "$1" >/dev/null 2>&1; }

check_python() {
    # An existing virtualenv is all `make install` needs.
    [[ -x "$ROOT/.venv/bin/python" ]] && "$ROOT/.venv/bin/python" -c '' 2>/dev/null && return 0
    if ! has "$PYTHON"; then
        missing python3 "Python 3.11 for the virtualenv"
        missing python3-venv "python3 -m venv"
        return 0
    fi
    local state
    state="$("$PYTHON" -c '
import sys
if sys.version_info < (3, 11):
    print("old", sys.version.split()[0])
else:
    try:
        import ensurepip, venv  # noqa: F401
    except ImportError:
        print("novenv")
' 2>/dev/null)" || state="broken"
    case "$state" in
        "") ;;
        novenv) missing python3-venv "python3 -m venv" ;;
        old*) die "$PYTHON is Python ${state#old }; syncbus needs 3.11+ (set PYTHON=python3.11 or newer)" ;;
        *) die "$PYTHON does not run" ;;
    esac
}

check_kafka() {
    has java || missing openjdk-17-jre-headless "java for the Kafka broker"
    has mvn || missing maven "mvn for kafka.sh fetch"
}

check_postgres() {
    bash "$HERE/postgres/pg.sh" bindir >/dev/null 2>&1 || missing postgresql "PostgreSQL server for pg.sh and the tests"
    has openssl || missing openssl "test certificates for pg.sh up --tls"
}

check_prometheus() {
    has promtool || missing prometheus "promtool"
    has amtool || missing prometheus-alertmanager "amtool"
}

check_browser() {
    has chromium || missing chromium "headless browser for the console tests"
    has chromedriver || missing chromium-driver "chromedriver"
}

check_all() {
    MISSING=()
    local g
    for g in "${GROUPS_WANTED[@]}"; do "check_$g"; done
}

# --- install -----------------------------------------------------------------

POLICY=/usr/sbin/policy-rc.d
POLICY_MARK="# syncbus deploy/setup.sh: no service starts during the install"
LOG=""

cleanup() {
    if [[ -f "$POLICY" ]] && grep -qxF "$POLICY_MARK" "$POLICY" 2>/dev/null; then rm -f "$POLICY"; fi
    return 0
}

apt_run() {
    if ! "$@" >>"$LOG" 2>&1; then
        echo "---- tail of $LOG" >&2
        tail -n 30 "$LOG" >&2
        die "'$*' failed (full log: $LOG)"
    fi
}

install_missing() {
    local -a pkgs=()
    local line
    for line in "${MISSING[@]}"; do pkgs+=("${line%%$'\t'*}"); done
    mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | awk '!seen[$0]++')

    if ((EUID != 0)); then
        {
            echo "setup.sh: missing:"
            for line in "${MISSING[@]}"; do printf '  %-26s %s\n' "${line%%$'\t'*}" "${line#*$'\t'}"; done
            echo "install them as root: sudo deploy/setup.sh"
            echo "  (or: sudo apt-get install -y --no-install-recommends ${pkgs[*]})"
        } >&2
        exit 1
    fi
    has apt-get || die "missing: ${pkgs[*]} -- and there is no apt-get here: install them with your package manager"

    # Several `make test`s may run setup at once: one installs, the others wait, then recheck.
    exec 8>"/var/lock/syncbus-setup.lock"
    flock -w "$APT_TIMEOUT" 8 || die "timed out waiting for another deploy/setup.sh"
    check_all
    ((${#MISSING[@]})) || return 0
    pkgs=()
    for line in "${MISSING[@]}"; do pkgs+=("${line%%$'\t'*}"); done
    mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | awk '!seen[$0]++')

    LOG="$(mktemp "${TMPDIR:-/tmp}/syncbus-setup.XXXXXX.log")"
    trap cleanup EXIT
    if [[ ! -e "$POLICY" ]]; then
        printf '#!/bin/sh\n%s\nexit 101\n' "$POLICY_MARK" >"$POLICY"
        chmod 755 "$POLICY"
    fi
    echo "setup.sh: installing ${pkgs[*]} with apt-get (log: $LOG)" >&2
    export DEBIAN_FRONTEND=noninteractive
    local -a apt=(apt-get -q -o "DPkg::Lock::Timeout=$APT_TIMEOUT")
    apt_run "${apt[@]}" update
    apt_run "${apt[@]}" install -y --no-install-recommends "${pkgs[@]}"
    cleanup

    check_all
    if ((${#MISSING[@]})); then
        for line in "${MISSING[@]}"; do echo "setup.sh: still missing after apt-get install: ${line%%$'\t'*} (${line#*$'\t'})" >&2; done
        die "see $LOG"
    fi
    local p
    for p in "${pkgs[@]}"; do
        echo "setup.sh: installed $p ($(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo '?'))"
    done
    rm -f "$LOG"
}

# --- main --------------------------------------------------------------------

CHECK_ONLY=0
GROUPS_WANTED=()
for arg in "$@"; do
    case "$arg" in
        --check) CHECK_ONLY=1 ;;
        all) GROUPS_WANTED+=("${ALL_GROUPS[@]}") ;;
        python | kafka | postgres | prometheus | browser) GROUPS_WANTED+=("$arg") ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown group '$arg' (groups: ${ALL_GROUPS[*]} all; option: --check)" ;;
    esac
done
((${#GROUPS_WANTED[@]})) || GROUPS_WANTED=("${ALL_GROUPS[@]}")

check_all
((${#MISSING[@]})) || exit 0
if ((CHECK_ONLY)); then
    for line in "${MISSING[@]}"; do printf 'missing %-26s %s\n' "${line%%$'\t'*}" "${line#*$'\t'}"; done
    exit 1
fi
install_missing
