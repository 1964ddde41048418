#!/usr/bin/env bash
# A private Docker engine for the image build test: no network bridge, no iptables, its own
# data root, exec root and socket under DIR, so it never touches (or needs) the host's engine
# or a registry.
#
#   dockerd.sh start DIR   start the engine unless one already answers on DIR/docker.sock;
#                          prints DOCKER_HOST=unix://DIR/docker.sock and DOCKERD_PID=<pid>
#                          (empty when an engine was already running, so the caller leaves it be)
#   dockerd.sh stop DIR    stop the engine whose pid is in DIR/dockerd.pid and wait for it
#
# Missing tools are installed with apt-get (docker.io for dockerd and docker, busybox-static for
# the test's base image); that needs root. CI: apt-get install -y docker.io busybox-static
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2
sock="$dir/docker.sock"
pidfile="$dir/dockerd.pid"
log="$dir/dockerd.log"

ensure_tools() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker >/dev/null || missing+=(docker.io)
    [ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || missing+=(busybox-static)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "dockerd.sh: missing ${missing[*]} and cannot install (needs root and apt-get)" >&2
        exit 1
    fi
    echo "dockerd.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

answers() { DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1; }

start() {
    ensure_tools
    mkdir -p "$dir"
    if [ -S "$sock" ] && answers; then
        echo "DOCKER_HOST=unix://$sock"
        echo "DOCKERD_PID="
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "dockerd.sh: dockerd needs root" >&2
        exit 1
    fi
    rm -f "$sock" "$pidfile"
    # Detached from this script's stdout so the caller reading it is not held open.
    setsid dockerd --bridge=none --iptables=false \
        --data-root "$dir/data" --exec-root "$dir/exec" \
        --host "unix://$sock" --pidfile "$pidfile" \
        </dev/null >"$log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 120); do
        if answers; then
            echo "DOCKER_HOST=unix://$sock"
            echo "DOCKERD_PID=$(cat "$pidfile" 2>/dev/null || echo "$pid")"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        sleep 0.5
    done
    echo "dockerd.sh: dockerd did not come up on $sock; last log lines:" >&2
    tail -n 30 "$log" >&2 || true
    kill "$pid" 2>/dev/null || true
    exit 1
}

stop() {
    [ -f "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    echo "dockerd.sh: dockerd $pid still running after 30 s" >&2
    exit 1
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
