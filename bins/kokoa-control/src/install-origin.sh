#!/bin/sh
# Installs a Kokoa Proxy origin from the bundle this script came in:
#   wireguard/wg0.conf  -> /etc/wireguard/wg0.conf, brought up with wg-quick
#   nginx/nginx.conf    -> /etc/nginx/conf.d/kokoa-origin.conf (the local proxy the edges
#                          reach through the tunnel), nginx reloaded
#   credentials.json    -> /etc/kokoa/credentials.json (mode 0600)
# and then starts the origin agent, `kokoa-origin`, if it is installed: the agent enrolls
# with the control plane using the single-use token in credentials.json, sends heartbeats
# every 30 s and follows edges as they come and go. Without the agent the tunnel and the
# proxy still work, but the control plane sees the origin as inactive.
#
# Usage: sudo sh scripts/install.sh   (from the unpacked bundle)
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: must be run as root (try: sudo sh $0)" >&2
    exit 1
fi

BUNDLE=$(cd "$(dirname "$0")/.." && pwd)
for f in wireguard/wg0.conf nginx/nginx.conf credentials.json; do
    if [ ! -f "$BUNDLE/$f" ]; then
        echo "install.sh: $BUNDLE/$f is missing; unpack the whole origin-config.tar.gz" >&2
        exit 1
    fi
done

missing=""
command -v wg-quick >/dev/null 2>&1 || missing="$missing wireguard-tools"
command -v nginx >/dev/null 2>&1 || missing="$missing nginx"
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

umask 077
mkdir -p /etc/wireguard /etc/kokoa
install -m 0600 "$BUNDLE/wireguard/wg0.conf" /etc/wireguard/wg0.conf
install -m 0600 "$BUNDLE/credentials.json" /etc/kokoa/credentials.json

if ip link show wg0 >/dev/null 2>&1; then
    wg-quick down wg0 || true
fi
wg-quick up wg0
if command -v systemctl >/dev/null 2>&1; then
    systemctl enable wg-quick@wg0 >/dev/null 2>&1 || true
fi

mkdir -p /etc/nginx/conf.d
install -m 0644 "$BUNDLE/nginx/nginx.conf" /etc/nginx/conf.d/kokoa-origin.conf
nginx -t
if pgrep -x nginx >/dev/null 2>&1; then
    nginx -s reload
elif command -v systemctl >/dev/null 2>&1; then
    systemctl enable --now nginx
else
    nginx
fi

if command -v kokoa-origin >/dev/null 2>&1; then
    if command -v systemctl >/dev/null 2>&1 && systemctl cat kokoa-origin.service >/dev/null 2>&1; then
        systemctl enable --now kokoa-origin
    else
        nohup kokoa-origin --credentials /etc/kokoa/credentials.json >/var/log/kokoa-origin.log 2>&1 &
    fi
    echo "kokoa-origin started; it enrolls with the control plane and sends heartbeats."
else
    echo "kokoa-origin is not installed: the tunnel and proxy are up, but no heartbeats are"
    echo "sent. Install kokoa-origin and run: kokoa-origin --credentials /etc/kokoa/credentials.json"
fi
echo "Origin installed: wg0 is up and nginx serves the routes on the tunnel address."
