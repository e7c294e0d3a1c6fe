#!/usr/bin/env bash
# vagrant/app/register.sh add|remove: an app VM's name in the gateway's
# DNS, by RFC 2136 UPDATE signed with the Vagrant TSIG key (nsupdate -k),
# so `vagrant up trumpet` makes trumpet.sean answer and `vagrant destroy`
# takes it away: no config change, no restart, no sudo on the laptop.
#
# Run inside the app VM by vagrant/app/Vagrantfile (add: a provisioner;
# remove: a trigger before destroy), or anywhere nsupdate can reach the
# gateway. Settings (environment):
#   APP_NAME       the name below the zone (default: the short host name)
#   APP_ZONE       the zone (default: sean)
#   APP_IP         the address to register (default: this machine's address
#                  on the gateway's /24)
#   GATEWAY_IP     the gateway's DNS address (default: 192.168.222.2)
#   GATEWAY_PORT   its port (default: 53)
#   TSIG_KEY       the key file (default: ~/.gatehouse-app/vagrant.key)
# `add` replaces whatever A records the name had (one VM, one address);
# `remove` deletes the name. Exits non-zero, with nsupdate's words, when
# the gateway refuses.
set -euo pipefail
action=${1:-}
case $action in add | remove) ;; *) echo "usage: $0 add|remove" >&2; exit 2 ;; esac

zone=${APP_ZONE:-sean}
name=${APP_NAME:-$(hostname -s)}
gateway=${GATEWAY_IP:-192.168.222.2}
port=${GATEWAY_PORT:-53}
key=${TSIG_KEY:-$HOME/.gatehouse-app/vagrant.key}
fqdn="$name.$zone"

if ! command -v nsupdate >/dev/null; then
  echo "register.sh: installing nsupdate (bind9-dnsutils)"
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bind9-dnsutils >/dev/null \
    || { sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bind9-dnsutils >/dev/null; }
fi

script="server $gateway $port
zone $zone
update delete $fqdn A"
if [ "$action" = add ]; then
  ip=${APP_IP:-}
  if [ -z "$ip" ]; then
    # This VM's address on the gateway's network (the same /24).
    net=${gateway%.*}.
    ip=$(ip -4 -o addr show | awk '{print $4}' | cut -d/ -f1 | grep -F "$net" | grep -vxF "$gateway" | head -n 1 || true)
    [ -n "$ip" ] || { echo "register.sh: no address on ${net}0/24 here; set APP_IP" >&2; exit 1; }
  fi
  script="$script
update add $fqdn 60 A $ip"
fi
printf '%s\nsend\n' "$script" | nsupdate -k "$key" -t 10
if [ "$action" = add ]; then
  echo "register.sh: $fqdn -> $ip (and every name below it) at $gateway"
else
  echo "register.sh: $fqdn removed at $gateway"
fi
