#!/usr/bin/env bash
# A private image registry for the image tests: Debian's docker-registry (distribution 2.x)
# listening on 127.0.0.1 only, with its storage, config, log and pid file under DIR.
#
#   registry.sh start DIR PORT   start it on 127.0.0.1:PORT; prints REGISTRY=127.0.0.1:PORT and
#                                REGISTRY_PID=<pid> once GET /v2/ answers; exits 1 when the port
#                                is taken or the registry does not come up (log tail on stderr)
#   registry.sh stop DIR         stop the registry whose pid is in DIR/registry.pid and wait for it
#
# A missing docker-registry is installed with apt-get (needs root).
# CI: apt-get install -y docker-registry
set -euo pipefail

usage() { echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$2
pidfile="$dir/registry.pid"
log="$dir/registry.log"

ensure_tools() {
    command -v docker-registry >/dev/null && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "registry.sh: docker-registry is missing and cannot be installed (needs root and apt-get)" >&2
        exit 1
    fi
    echo "registry.sh: installing docker-registry" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends docker-registry >&2
}

# True when this DIR's registry answers GET /v2/ on PORT: status 200 and the X-Registry-Dir header
# its config adds (so another server on the port does not count). bash's /dev/tcp: no curl needed.
answers() {
    local port=$1 status line found=1
    { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
    printf 'GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    read -r -t 5 status <&3 || true
    while read -r -t 5 line <&3; do
        line=${line%$'\r'}
        [ -z "$line" ] && break
        [ "$line" = "X-Registry-Dir: $dir" ] && found=0
    done
    exec 3<&- 3>&-
    [[ "$status" == HTTP/1.?" 200"* ]] && return $found
}

start() {
    [ $# -eq 1 ] || usage
    local port=$1
    ensure_tools
    mkdir -p "$dir/storage"
    cat >"$dir/config.yml" <<CONF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: raydeploy-test-registry
  headers:
    X-Registry-Dir: ["$dir"]
CONF
    # Detached from this script's stdout so the caller reading it is not held open.
    setsid docker-registry serve "$dir/config.yml" </dev/null >"$log" 2>&1 &
    local pid=$!
    echo "$pid" >"$pidfile"
    # Up to 60 s: on a loaded machine the registry can take a while to answer.
    for _ in $(seq 1 600); do
        if ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        if answers "$port"; then
            echo "REGISTRY=127.0.0.1:$port"
            echo "REGISTRY_PID=$pid"
            return 0
        fi
        sleep 0.1
    done
    echo "registry.sh: docker-registry did not come up on 127.0.0.1:$port within 60 s; last log lines:" >&2
    tail -n 20 "$log" >&2 || true
    kill "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    exit 1
}

stop() {
    [ -f "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
    for _ in $(seq 1 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pidfile"
            return 0
        fi
        sleep 0.1
    done
    echo "registry.sh: docker-registry $pid still running after 30 s" >&2
    exit 1
}

case "$cmd" in
    start) shift 2; start "$@" ;;
    stop) stop ;;
    *) usage ;;
esac
