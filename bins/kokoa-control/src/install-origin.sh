#!/bin/sh
# Installs a Kokoa Proxy origin from the bundle this script came in.
#
# The origin agent `kokoa-origin`: when it is not installed (a package, or by hand) and the
# bundle has agent.conf, it is downloaded from the control plane (the URL in agent.conf),
# installed as /usr/local/bin/kokoa-origin only if its SHA-256 is the one in agent.conf,
# with the bundle's systemd unit. Then credentials.json goes to /etc/kokoa/credentials.json
# (mode 0600), the agent makes its WireGuard key pair (the private key never leaves this
# machine), enrolls once with the single-use token inside (trusting the control plane by
# the CA pin inside) and starts. It owns wg0 (dialling out to every edge, following edges
# as they come and go), forwards the tunnel to the local services and sends heartbeats
# every 30 s.
#
# wireguard/wg0.conf and nginx/nginx.conf are for reading: the tunnel as it is now (without
# a private key, which only the agent has) and an nginx alternative to its forwarding.
#
# Usage: sudo sh scripts/install.sh   (from the unpacked bundle)
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: must be run as root (try: sudo sh $0)" >&2
    exit 1
fi

BUNDLE=$(cd "$(dirname "$0")/.." && pwd)
# Whether systemd runs this machine (not merely installed, as in many containers).
systemd_runs() { [ -d /run/systemd/system ]; }
if [ ! -f "$BUNDLE/credentials.json" ]; then
    echo "install.sh: $BUNDLE/credentials.json is missing; unpack the whole origin-config.tar.gz" >&2
    exit 1
fi
if ! command -v kokoa-origin >/dev/null 2>&1 && [ ! -f "$BUNDLE/agent.conf" ]; then
    echo "install.sh: kokoa-origin is not installed, and this control plane hands out no copy" >&2
    echo "(the bundle has no agent.conf): install the kokoa-origin package or binary, then run" >&2
    echo "this script again" >&2
    exit 1
fi

missing=""
command -v wg >/dev/null 2>&1 || missing="$missing wireguard-tools"
if ! command -v kokoa-origin >/dev/null 2>&1; then
    command -v curl >/dev/null 2>&1 || missing="$missing curl ca-certificates"
fi
if [ -n "$missing" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install.sh: please install:$missing (apt-get was not found)" >&2
        exit 1
    fi
    echo "Installing:$missing"
    apt-get update
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi

if ! command -v kokoa-origin >/dev/null 2>&1 && [ -f "$BUNDLE/agent.conf" ]; then
    {
        IFS= read -r agent_url
        IFS= read -r agent_sha256
    } <"$BUNDLE/agent.conf"
    # A control plane with its own CA (a pin in credentials.json) is not known to the
    # system: what vouches for the binary is the SHA-256 from the bundle, checked below.
    insecure=
    if grep -q '"ca_pin"' "$BUNDLE/credentials.json"; then
        insecure=--insecure
    fi
    download=$(mktemp)
    echo "Downloading kokoa-origin from $agent_url"
    curl -fsSL ${insecure:+"$insecure"} --proto =https --retry 5 --max-time 600 -o "$download" "$agent_url"
    # A binary that does not match the expected checksum never runs: set -e stops here.
    echo "$agent_sha256  $download" | sha256sum -c -
    install -m 0755 "$download" /usr/local/bin/kokoa-origin
    rm -f "$download"
    if systemd_runs && ! systemctl cat kokoa-origin.service >/dev/null 2>&1; then
        install -m 0644 "$BUNDLE/systemd/kokoa-origin.service" /etc/systemd/system/kokoa-origin.service
        systemctl daemon-reload
    fi
fi

umask 077
mkdir -p /etc/kokoa
install -m 0600 "$BUNDLE/credentials.json" /etc/kokoa/credentials.json

STATE=/var/lib/kokoa-origin
mkdir -p "$STATE"
if [ ! -f "$STATE/credential.json" ]; then
    kokoa-origin enroll --state-dir "$STATE" --bundle /etc/kokoa/credentials.json
fi
if systemd_runs && systemctl cat kokoa-origin.service >/dev/null 2>&1; then
    systemctl enable --now kokoa-origin
else
    nohup kokoa-origin run --state-dir "$STATE" >/var/log/kokoa-origin.log 2>&1 &
fi
echo "Origin installed: kokoa-origin runs wg0, forwards the tunnel and sends heartbeats."
