#!/usr/bin/env bash
# vagrant/provision.sh: builds and installs gatehouse in the gateway VM.
#
# Run as root by the Vagrantfile's shell provisioner on `vagrant up` (first
# time) and on every `vagrant provision`. Idempotent:
#   1. build dependencies and a Rust toolchain (rustup; Debian 12's rustc is
#      too old for the workspace's rust-version);
#   2. `cargo build --release` of the workspace synced at /vagrant; installs
#      /usr/local/bin/gatehouse when the binary changed (and then restarts);
#   3. the config: vagrant/gatehouse.yaml (uploaded by the Vagrantfile's file
#      provisioner on every run; /vagrant is only rsynced on `vagrant up`)
#      -> /etc/gatehouse/gatehouse.yaml,
#      written atomically (temp file + mv) and only when it changed. The
#      running gatehouse notices the new file and reloads it: no restart, so
#      adding a record is live at once and nobody's SSH session drops;
#   4. the systemd unit vagrant/gatehouse.service, enabled and started.
set -euo pipefail

SRC=${GATEHOUSE_SRC:-/vagrant}                       # the workspace, synced by Vagrant
# GATEWAY_IP (from the Vagrantfile) is only used in the closing message.
BUILD_USER=${GATEHOUSE_BUILD_USER:-vagrant}          # builds unprivileged
TARGET_DIR=${GATEHOUSE_TARGET_DIR:-/var/cache/gatehouse-build}
BIN=/usr/local/bin/gatehouse
CONF_DIR=/etc/gatehouse
CONF=$CONF_DIR/gatehouse.yaml
UNIT=/etc/systemd/system/gatehouse.service

say() { printf 'gatehouse provision: %s\n' "$*"; }

home=$(getent passwd "$BUILD_USER" | cut -d: -f6)
# The newest config and unit: uploaded by the Vagrantfile, else the workspace's.
upload="$home/.gatehouse-provision"
yaml="$upload/gatehouse.yaml"
[ -f "$yaml" ] || yaml="$SRC/vagrant/gatehouse.yaml"
unit="$upload/gatehouse.service"
[ -f "$unit" ] || unit="$SRC/vagrant/gatehouse.service"

# 1. Build dependencies and rustup for the build user.
export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in build-essential cmake pkg-config curl ca-certificates; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if ((${#need[@]})); then
  say "installing ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

cargo="$home/.cargo/bin/cargo"
if [ ! -x "$cargo" ]; then
  say "installing the Rust toolchain (rustup) for $BUILD_USER"
  runuser -u "$BUILD_USER" -- env HOME="$home" sh -c \
    'curl --proto "=https" --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --no-modify-path'
fi

# 2. Build out of the synced folder into a VM-local target dir, then install.
install -d -o "$BUILD_USER" -g "$BUILD_USER" -m 0755 "$TARGET_DIR"
say "cargo build --release (the first build takes a while)"
runuser -u "$BUILD_USER" -- env HOME="$home" PATH="$home/.cargo/bin:$PATH" CARGO_TARGET_DIR="$TARGET_DIR" \
  "$cargo" build --release --locked --manifest-path "$SRC/Cargo.toml" --bin gatehouse
built="$TARGET_DIR/release/gatehouse"
binary_changed=no
if ! cmp -s "$built" "$BIN"; then
  install -m 0755 -o root -g root "$built" "$BIN.new"
  mv -f "$BIN.new" "$BIN"
  binary_changed=yes
  say "installed $BIN ($("$BIN" --version))"
fi

# 3. The config, atomically and only when it changed. 0644: it holds public
#    keys only, and the service's dynamic user must read it.
install -d -o root -g root -m 0755 "$CONF_DIR"
"$BIN" check --config "$yaml" >/dev/null # refuse a bad file before it goes live
if ! cmp -s "$yaml" "$CONF"; then
  tmp=$(mktemp "$CONF_DIR/.gatehouse.yaml.XXXXXX")
  cat "$yaml" >"$tmp"
  chmod 0644 "$tmp"
  sync "$tmp"
  mv -f "$tmp" "$CONF"
  say "wrote $CONF (a running gatehouse reloads it by itself)"
fi

# 4. The unit.
unit_changed=no
if ! cmp -s "$unit" "$UNIT"; then
  install -m 0644 -o root -g root "$unit" "$UNIT.new"
  mv -f "$UNIT.new" "$UNIT"
  systemctl daemon-reload
  unit_changed=yes
fi
systemctl enable --quiet gatehouse.service
if ! systemctl is-active --quiet gatehouse.service; then
  say "starting gatehouse"
  systemctl start gatehouse.service
elif [ "$binary_changed" = yes ] || [ "$unit_changed" = yes ]; then
  say "restarting gatehouse (new binary or unit)"
  systemctl restart gatehouse.service
fi
systemctl --no-pager --lines=0 status gatehouse.service || true
ip=${GATEWAY_IP:-192.168.222.2}
say "ready: from the host, dig @$ip gateway.sean; ssh -J USER@$ip:11122 TARGET"
