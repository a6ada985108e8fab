#!/bin/sh
# SPDX-License-Identifier: MIT
# update-readme-bench.sh: run tools/awbench and put its table, verbatim,
# between the awbench markers of README.md, and its bar chart of the
# ratios in doc/bench.svg (drawn by awbench --svg), which the README shows
# (figures are never typed).  rr_syscalls is counted by
# tools/rr-syscalls.sh, which awbench runs (perf or strace needed, else
# n/a); the libuv figures need awbench built with libuv (else n/a).
set -e
cd "$(dirname "$0")/.."
mkdir -p doc
out=$(./tools/awbench --rounds "${ROUNDS:-5}" --svg doc/bench.svg)
{
    sed '/<!-- awbench:begin -->/q' README.md
    echo '```'
    echo "$ ./tools/awbench --rounds ${ROUNDS:-5} --svg doc/bench.svg   # $(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "$out"
    echo '```'
    sed -n '/<!-- awbench:end -->/,$p' README.md
} > README.md.new
mv README.md.new README.md
