#!/bin/sh
# kcat from Debian packages unpacked (not installed) under .cache/kcat by
# `make doc-clients`: no root needed, the system's libraries stay untouched.
here=$(dirname "$(readlink -f "$0")")/../kcat
for dir in "$here"/usr/lib/*-linux-gnu; do libs=$dir; done
LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/usr/bin/kcat" "$@"
