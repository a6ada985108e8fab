#!/bin/sh
# SPDX-License-Identifier: MIT
# autogen.sh: bootstrap the autotools build; --install-deps first installs the
# Debian packages the build and tests need, and only those that are missing.
set -e
cd "$(dirname "$0")"

DEPS="gcc g++ make autoconf automake libtool pkg-config libevent-dev libssl-dev openssl check valgrind"

if [ "$1" = "--install-deps" ]; then
    missing=""
    for p in $DEPS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
            missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "autogen.sh: installing:$missing"
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
    fi
fi

autoreconf --install --force
