#!/bin/sh
# Installs a Kokoa Proxy origin from the bundle this script came in.
#
# The origin agent `kokoa-origin`: when it is not installed (a package, or by hand) and the
# bundle has agent.conf, it is downloaded from the control plane (the URL in agent.conf),
# installed as /usr/local/bin/kokoa-origin only if its SHA-256 is the one in agent.conf,
# with the bundle's systemd unit. Then credentials.json goes to /etc/kokoa/credentials.json
# (mode 0600), the agent enrolls once with the single-use token inside (trusting the control
# plane by the CA pin inside) and starts. It owns wg0 (dialling out to every edge,
# following edges as they come and go), forwards the tunnel to the local services and sends
# heartbeats every 30 s.
#
# Without the agent and agent.conf, a static setup from the bundle's files:
#   wireguard/wg0.conf  -> /etc/wireguard/wg0.conf, brought up with wg-quick
#   nginx/nginx.conf    -> /etc/nginx/conf.d/kokoa-origin.conf (the local proxy the edges
#                          reach through the tunnel), nginx reloaded
# It works, but sends no heartbeats, and edges added later need a new bundle.
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
for f in wireguard/wg0.conf nginx/nginx.conf credentials.json; do
    if [ ! -f "$BUNDLE/$f" ]; then
        echo "install.sh: $BUNDLE/$f is missing; unpack the whole origin-config.tar.gz" >&2
        exit 1
    fi
done

missing=""
command -v wg >/dev/null 2>&1 || missing="$missing wireguard-tools"
if ! command -v kokoa-origin >/dev/null 2>&1; then
    if [ -f "$BUNDLE/agent.conf" ]; then
        command -v curl >/dev/null 2>&1 || missing="$missing curl ca-certificates"
    else
        command -v nginx >/dev/null 2>&1 || missing="$missing nginx"
    fi
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

if command -v kokoa-origin >/dev/null 2>&1; then
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
    exit 0
fi

mkdir -p /etc/wireguard
install -m 0600 "$BUNDLE/wireguard/wg0.conf" /etc/wireguard/wg0.conf
if ip link show wg0 >/dev/null 2>&1; then
    wg-quick down wg0 || true
fi
wg-quick up wg0
if systemd_runs; then
    systemctl enable wg-quick@wg0 >/dev/null 2>&1 || true
fi

mkdir -p /etc/nginx/conf.d
install -m 0644 "$BUNDLE/nginx/nginx.conf" /etc/nginx/conf.d/kokoa-origin.conf
nginx -t
if pgrep -x nginx >/dev/null 2>&1; then
    nginx -s reload
elif systemd_runs; then
    systemctl enable --now nginx
else
    nginx
fi
echo "Origin installed (static): wg0 is up and nginx serves the routes on the tunnel address."
echo "Install kokoa-origin and run this script again for heartbeats and edges that follow."
