#!/usr/bin/env bash
# Installs and enrolls the Shoumi agent on a Debian/Ubuntu workstation. Run as root:
#   install-agent.sh --collector collector.corp:7444 --token se_… --ca-fingerprint 3f9a… [--source DIR]
# The token comes from `shoumi-collector enroll-token create` (one per workstation, valid 24 h); the
# fingerprint from `shoumi-collector ca-fingerprint`. The agent pins that CA: a collector that
# presents another never receives the token.
set -euo pipefail
collector="" token="" fingerprint="" source="$(cd "$(dirname "$0")/../.." && pwd)"
while [ $# -gt 0 ]; do
  case "$1" in
    --collector) collector="$2"; shift 2 ;;
    --token) token="$2"; shift 2 ;;
    --ca-fingerprint) fingerprint="$2"; shift 2 ;;
    --source) source="$2"; shift 2 ;;
    *) echo "install-agent.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$collector" ] || [ -z "$token" ] || [ -z "$fingerprint" ]; then
  echo "install-agent.sh: --collector, --token and --ca-fingerprint are required" >&2; exit 2
fi
[ "$(id -u)" -eq 0 ] || { echo "install-agent.sh: run as root" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv /opt/shoumi/venv
/opt/shoumi/venv/bin/pip install --quiet "$source"
install -d -m 0755 /etc/shoumi
[ -f /etc/shoumi/agent.toml ] || install -m 0644 "$here/agent.toml.example" /etc/shoumi/agent.toml
install -d -m 0700 /var/lib/shoumi-agent
/opt/shoumi/venv/bin/shoumi-agent enroll --collector "$collector" --token "$token" \
  --ca-fingerprint "$fingerprint" --state-dir /var/lib/shoumi-agent
install -m 0644 "$here/shoumi-agent.service" /etc/systemd/system/shoumi-agent.service
systemctl daemon-reload
systemctl enable --now shoumi-agent.service
echo "shoumi agent enrolled and running; edit /etc/shoumi/agent.toml and 'systemctl restart shoumi-agent' to change what it watches"
