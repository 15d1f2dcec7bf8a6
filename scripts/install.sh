#!/usr/bin/env bash
# Installs the binaries, units, presets, tmpfiles and sample configs into an
# image tree, as a podvm image builder needs them.
#
#   scripts/install.sh BIN_DIR DESTDIR PREFIX LAYOUT
#
# LAYOUT is `socket` (socket-activated units, the default) or `path` (the
# seed-style path-activated units of units/path-activated/).
set -euo pipefail

bin_dir=$1
destdir=$2
prefix=$3
layout=${4:-socket}
src=$(cd "$(dirname "$0")/.." && pwd)/units

binaries=(attestation-agent confidential-data-hub api-server-rest process-user-data)
unit_dir=$destdir/usr/lib/systemd/system
share_dir=$destdir$prefix/share/guest-components

case $layout in
socket | path) ;;
*)
    echo "install.sh: unknown layout '$layout' (expected socket or path)" >&2
    exit 2
    ;;
esac

install -d "$destdir$prefix/bin" "$unit_dir" "$destdir/usr/lib/systemd/system-preset" \
    "$destdir/usr/lib/tmpfiles.d" "$share_dir" "$destdir$prefix/share/doc/guest-components"
for b in "${binaries[@]}"; do
    install -m 0755 "$bin_dir/$b" "$destdir$prefix/bin/$b"
done

# Units name /usr/local/bin; another prefix is written into them here.
install_unit() {
    sed "s|/usr/local/bin/|$prefix/bin/|g; s|/usr/local/share/|$prefix/share/|g" "$1" >"$unit_dir/$(basename "$1")"
    chmod 0644 "$unit_dir/$(basename "$1")"
}

for u in process-user-data.path process-user-data.service netns@.service kata-agent.service; do
    install_unit "$src/$u"
done
if [ "$layout" = socket ]; then
    for u in attestation-agent confidential-data-hub api-server-rest; do
        install_unit "$src/$u.socket"
        install_unit "$src/$u.service"
    done
    install -m 0644 "$src/90-guest-components.preset" "$destdir/usr/lib/systemd/system-preset/"
else
    for u in "$src"/path-activated/*.service "$src"/path-activated/*.path; do
        install_unit "$u"
    done
    install -m 0644 "$src/path-activated/90-guest-components.preset" "$destdir/usr/lib/systemd/system-preset/"
fi

install -m 0644 "$src/guest-components.tmpfiles" "$destdir/usr/lib/tmpfiles.d/guest-components.conf"
install -m 0644 "$src/agent-config.toml" "$share_dir/agent-config.toml"
# An image's own kata-agent config wins over the sample.
if [ ! -e "$destdir/etc/agent-config.toml" ]; then
    install -D -m 0644 "$src/agent-config.toml" "$destdir/etc/agent-config.toml"
fi
# Opt-in drop-ins: copy a directory's contents under /etc/systemd/system/.
cp -r "$src/debug" "$src/read-only-image" "$share_dir/"
install -m 0644 "$src/../README.md" "$destdir$prefix/share/doc/guest-components/README.md"
