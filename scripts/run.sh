#!/usr/bin/env bash
# Starts the three services in the foreground from the release binaries in
# $1 with the embedded default: the sample attester and the offline_fs KBC
# with one sample resource, under a temporary runtime directory. Ctrl-C
# stops them.
set -euo pipefail

bin_dir=$(cd "$1" && pwd)
bind=${ASR_BIND:-127.0.0.1:8006}
runtime=$(mktemp -d -t guest-components.XXXXXX)
pids=()

cleanup() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$runtime"
}
trap cleanup EXIT INT TERM

wait_for() {
    for _ in $(seq 100); do
        [ -S "$1" ] && return 0
        sleep 0.05
    done
    echo "run.sh: $2 did not create $1" >&2
    exit 1
}

printf 'hello from the offline KBC\n' >"$runtime/sample-resource"
printf '{"default/key/1": "%s"}\n' "$(base64 -w0 "$runtime/sample-resource")" >"$runtime/resources.json"
cat >"$runtime/cdh.toml" <<TOML
socket = "unix://$runtime/cdh.sock"

[aa]
aa_socket = "unix://$runtime/aa.sock"

[kbc]
name = "offline_fs_kbc"
url = "null"
TOML

export AA_KBC_PARAMS=offline_fs_kbc::null
AA_EVENTLOG_PATH=$runtime/eventlog "$bin_dir/attestation-agent" --tee sample \
    --attestation_sock "unix://$runtime/aa.sock" &
pids+=($!)
wait_for "$runtime/aa.sock" attestation-agent

OFFLINE_FS_KBC_EXTRA_FILE_PATH=$runtime/resources.json "$bin_dir/confidential-data-hub" \
    -c "$runtime/cdh.toml" &
pids+=($!)
wait_for "$runtime/cdh.sock" confidential-data-hub

"$bin_dir/api-server-rest" --features all --bind "$bind" \
    --aa_addr "unix://$runtime/aa.sock" --cdh_addr "unix://$runtime/cdh.sock" &
pids+=($!)

cat <<TEXT

The stack is running (runtime directory $runtime). In another shell:

  curl http://$bind/cdh/resource/default/key/1
  curl 'http://$bind/aa/evidence?runtime_data=hello'
  curl http://$bind/info

Press Ctrl-C to stop.
TEXT
wait -n "${pids[@]}"
