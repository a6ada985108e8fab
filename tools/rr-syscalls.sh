#!/bin/sh
# SPDX-License-Identifier: MIT
# rr-syscalls.sh: the system calls a request/response server makes per
# round trip, in awbench's HTTP benchmark (http_rr: 100 keep-alive
# connections from a client in another process).  Runs
#   awbench --rounds 1 --only http_rr      (AWBENCH_SIDE=ours or raw)
# or http_rr_uv, counting the server process's system calls over the
# measured window only (the client's are not counted), and prints
# calls per round trip (3 decimals), or n/a when it cannot count.
#
#   tools/rr-syscalls.sh [ours|bev|uv]     (default ours)
#
# Counting: perf stat on raw_syscalls:sys_enter (in-kernel counters, the
# server runs at full speed), enabled and disabled through perf's control
# fifo by awbench itself at the window's ends (AWBENCH_WINDOW_CTL and
# AWBENCH_WINDOW_ACK).  Without perf, strace -f -ff: every call between
# awbench's "enable" and "disable" marks in the server's trace (strace
# slows the server down, so more requests wait in each epoll_wait and the
# figure comes out a little lower).  AWBENCH: the awbench to run (awbench
# sets it to itself; default: tools/awbench beside this script or in the
# current directory).  COUNTER=perf|strace forces one.
set -u

server=${1:-ours}
case $server in
ours) side=ours only=http_rr ;;
bev) side=raw only=http_rr ;;
uv) side=raw only=http_rr_uv ;;
*)
    echo "usage: rr-syscalls.sh [ours|bev|uv]" >&2
    exit 2
    ;;
esac

if [ -z "${AWBENCH:-}" ]; then
    AWBENCH=$(dirname "$0")/awbench
    [ -x "$AWBENCH" ] || AWBENCH=./tools/awbench
fi
if [ ! -x "$AWBENCH" ]; then
    echo "rr-syscalls.sh: no awbench ($AWBENCH)" >&2
    echo n/a
    exit 1
fi

if [ -z "${COUNTER:-}" ]; then
    if perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
        COUNTER=perf
    elif strace -o /dev/null true >/dev/null 2>&1; then
        COUNTER=strace
    else
        echo "rr-syscalls.sh: neither perf nor strace can count here" >&2
        echo n/a
        exit 1
    fi
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rr-syscalls.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

run_perf() {
    mkfifo "$tmp/ctl" "$tmp/ack" || return 1
    # -i: the client, forked by awbench, is not counted; -D -1: counting
    # starts disabled, awbench enables it for the window.
    AWBENCH_SIDE=$side AWBENCH_WINDOW_CTL=$tmp/ctl \
        AWBENCH_WINDOW_ACK=$tmp/ack \
        perf stat -x, -o "$tmp/stat" -e raw_syscalls:sys_enter -i -D -1 \
        --control "fifo:$tmp/ctl,$tmp/ack" \
        "$AWBENCH" --rounds 1 --only "$only" >/dev/null 2>"$tmp/err" ||
        return 1
    calls=$(awk -F, '/raw_syscalls:sys_enter/ { print $1 }' "$tmp/stat")
}

run_strace() {
    AWBENCH_SIDE=$side AWBENCH_WINDOW_CTL=/dev/null \
        strace -f -ff -qq -o "$tmp/t" \
        "$AWBENCH" --rounds 1 --only "$only" >/dev/null 2>"$tmp/err" ||
        return 1
    # The server's trace is the one with the marks; with -ff each process
    # and thread has its file, so every line is one whole call.
    trace=$(grep -l 'write([0-9]*, "enable\\n"' "$tmp"/t.* | head -n 1)
    [ -n "$trace" ] || return 1
    calls=$(awk '/write\([0-9]+, "disable\\n"/ { on = 0 }
        on && !/^(---|\+\+\+)/ { n++ }
        /write\([0-9]+, "enable\\n"/ { on = 1 }
        END { print n + 0 }' "$trace")
}

calls=
if ! run_$COUNTER || [ -z "$calls" ]; then
    echo "rr-syscalls.sh: $COUNTER failed:" >&2
    cat "$tmp/err" >&2
    echo n/a
    exit 1
fi
requests=$(sed -n 's/^awbench: window: \([0-9]*\) requests$/\1/p' "$tmp/err")
case $calls$requests in
*[!0-9]* | "")
    # perf says "<not counted>"; awbench said nothing (n/a: no libuv).
    echo n/a
    exit 1
    ;;
esac
if [ "$requests" -eq 0 ]; then
    echo n/a
    exit 1
fi
awk -v c="$calls" -v r="$requests" 'BEGIN { printf "%.3f\n", c / r }'
