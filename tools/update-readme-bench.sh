#!/bin/sh
# SPDX-License-Identifier: MIT
# update-readme-bench.sh: run tools/awbench and put its table, verbatim,
# between the awbench markers of README.md (figures are never typed).
set -e
cd "$(dirname "$0")/.."
out=$(./tools/awbench --rounds "${ROUNDS:-5}")
{
    sed '/<!-- awbench:begin -->/q' README.md
    echo '```'
    echo "$ ./tools/awbench --rounds ${ROUNDS:-5}   # $(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "$out"
    echo '```'
    sed -n '/<!-- awbench:end -->/,$p' README.md
} > README.md.new
mv README.md.new README.md
