#!/usr/bin/env bash
# vagrant/provision.sh: installs gatehouse in the gateway VM, the way an
# operator does on any Debian host: from its Debian package.
#
# Run as root by the Vagrantfile's shell provisioner on `vagrant up` (first
# time) and on every `vagrant provision`; tests/vm/run runs it the same way
# in a booted Debian 12. Idempotent: a second run changes nothing and
# restarts nothing.
#   1. the package: $GATEHOUSE_DEB when the host uploaded one (the
#      Vagrantfile does when GATEHOUSE_DEB is set on the host), else built
#      in the VM from the synced workspace (rustup, cargo-deb,
#      packaging/build-deb). Installed with apt only when its binary
#      differs from the installed one; the package's postinst makes the
#      `gatehouse` user and state dir, its unit is enabled and started, an
#      upgrade restarts it;
#   2. the TSIG key app VMs register their names with (vagrant/tsig/
#      vagrant.key, made on the host by the Vagrantfile and uploaded) ->
#      /etc/gatehouse/tsig/vagrant.key, 0600 gatehouse's;
#   3. the config: vagrant/gatehouse.yaml (uploaded by the Vagrantfile's
#      file provisioner on every run; /vagrant is only rsynced on `vagrant
#      up`) -> /etc/gatehouse/gatehouse.yaml, checked first, written
#      atomically (temp file + mv) and only when it changed. The running
#      gatehouse notices the new file and reloads it: no restart, so adding
#      a record is live at once and nobody's SSH session drops. Only a
#      change a reload cannot apply (`gatehouse check --against`: listen
#      addresses, state_dir, log, state) restarts it.
# It must not: restart gatehouse for a change a reload applies, or leave a
# half-written config or a config that `gatehouse check` refuses.
set -euo pipefail

SRC=${GATEHOUSE_SRC:-/vagrant}               # the workspace, synced by Vagrant
DEB=${GATEHOUSE_DEB:-}                       # a package uploaded from the host
BUILD_USER=${GATEHOUSE_BUILD_USER:-vagrant}  # builds unprivileged
BIN=/usr/bin/gatehouse
CONF_DIR=/etc/gatehouse
CONF=$CONF_DIR/gatehouse.yaml

say() { printf 'gatehouse provision: %s\n' "$*"; }

home=$(getent passwd "$BUILD_USER" | cut -d: -f6)
# The newest config: uploaded by the Vagrantfile, else the workspace's.
yaml="$home/.gatehouse-provision/gatehouse.yaml"
[ -f "$yaml" ] || yaml="$SRC/vagrant/gatehouse.yaml"
export DEBIAN_FRONTEND=noninteractive

# An earlier vagrant/provision.sh installed /usr/local/bin/gatehouse and its
# own unit in /etc/systemd/system, which would shadow the package's unit.
if grep -qs '^# vagrant/gatehouse.service' /etc/systemd/system/gatehouse.service; then
  say "removing the unit and binary of the pre-package provisioning"
  systemctl disable --now --quiet gatehouse.service || true
  rm -f /etc/systemd/system/gatehouse.service /usr/local/bin/gatehouse
  systemctl daemon-reload
fi

# 1. The package.
if [ -z "$DEB" ]; then
  need=()
  for pkg in build-essential pkg-config curl ca-certificates; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
  done
  if ((${#need[@]})); then
    say "installing ${need[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
  if [ ! -x "$home/.cargo/bin/cargo" ]; then
    say "installing the Rust toolchain (rustup) for $BUILD_USER"
    runuser -u "$BUILD_USER" -- env HOME="$home" sh -c \
      'curl --proto "=https" --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --no-modify-path'
  fi
  say "packaging/build-deb in $SRC (the first build takes a while)"
  # target/ is not synced from the host (rsync__exclude), so it is the VM's.
  DEB=$(cd "$SRC" && runuser -u "$BUILD_USER" -- env HOME="$home" PATH="$home/.cargo/bin:$PATH" \
    packaging/build-deb | tail -n 1)
  case $DEB in /*) ;; *) DEB=$SRC/$DEB ;; esac
fi
[ -f "$DEB" ] || { say "no package at $DEB" >&2; exit 1; }
packaged=$(dpkg-deb --fsys-tarfile "$DEB" | tar -xOf - ./usr/bin/gatehouse | sha256sum | cut -d' ' -f1)
installed=$( [ -x "$BIN" ] && sha256sum "$BIN" | cut -d' ' -f1 || true)
if [ "$packaged" != "$installed" ]; then
  say "installing $(dpkg-deb -f "$DEB" Package) $(dpkg-deb -f "$DEB" Version)"
  # Our config replaces the package's example: keep it (no conffile prompt).
  apt-get install -y -qq -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "$(realpath "$DEB")" >/dev/null
  say "installed $BIN ($("$BIN" --version))"
fi

# 2. The TSIG key app VMs register with (uploaded beside the config; the
#    config names it, so it is in place before the check): 0600, owned by
#    the user gatehouse runs as, written atomically, only when it changed.
key="$(dirname "$yaml")/tsig/vagrant.key"
# The upload comes with the uploader's umask; gatehouse reads only 0600 keys.
[ -f "$key" ] && chmod 0600 "$key"
if [ -f "$key" ] && ! cmp -s "$key" "$CONF_DIR/tsig/vagrant.key"; then
  install -d -m 0750 -o root -g gatehouse "$CONF_DIR/tsig"
  tmp=$(mktemp "$CONF_DIR/tsig/.vagrant.key.XXXXXX")
  cat "$key" >"$tmp"
  chown gatehouse:gatehouse "$tmp"
  chmod 0600 "$tmp"
  mv -f "$tmp" "$CONF_DIR/tsig/vagrant.key"
  say "wrote $CONF_DIR/tsig/vagrant.key (app VMs sign their names with it)"
fi

# 3. The config, checked, atomically and only when it changed; 0640
#    root:gatehouse like the package's (it may name secret files).
checked=$("$BIN" check --config "$yaml" --against "$CONF") # refuses a bad file before it goes live
restart=$(printf '%s\n' "$checked" | sed -n 's/^restart needed: //p')
if ! cmp -s "$yaml" "$CONF"; then
  tmp=$(mktemp "$CONF_DIR/.gatehouse.yaml.XXXXXX")
  cat "$yaml" >"$tmp"
  chown root:gatehouse "$tmp"
  chmod 0640 "$tmp"
  sync "$tmp"
  mv -f "$tmp" "$CONF"
  if [ -n "$restart" ] && systemctl is-active --quiet gatehouse.service; then
    # Listeners are bound at start: a reload would keep the old ones.
    say "wrote $CONF; restarting gatehouse (changed: $restart)"
    systemctl restart gatehouse.service
  else
    say "wrote $CONF (the running gatehouse reloads it by itself)"
  fi
fi

# 4. The package's unit: enabled and running (postinst started it; this
#    brings back one an operator stopped).
systemctl enable --quiet gatehouse.service
if ! systemctl is-active --quiet gatehouse.service; then
  say "starting gatehouse"
  systemctl start gatehouse.service
fi
ip=${GATEWAY_IP:-192.168.222.2}
say "ready: from the host, dig @$ip gateway.sean; ssh -J USER@$ip:11122 TARGET"
