#!/usr/bin/env bash
# Gathers the shipped binaries into one directory: everything from the
# workspace's release build, then the statically linked REST server over its
# dynamic build.
#
#   scripts/gather-stack.sh RELEASE_DIR STATIC_RELEASE_DIR STACK_DIR
set -euo pipefail

release=$1
static=$2
stack=$3

install -d "$stack"
for b in attestation-agent confidential-data-hub process-user-data test-kbs bench; do
    install -m 0755 "$release/$b" "$stack/$b"
done
install -m 0755 "$static/api-server-rest" "$stack/api-server-rest"
