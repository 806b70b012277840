#!/bin/sh
# First boot of a Kokoa Proxy edge: install WireGuard and nginx, install the kokoa-edge
# agent, enroll with the control plane, start the agent, wait for /health. The agent
# reports the edge ready to the control plane itself once its configuration is applied.
#
# Usage: kokoa-edge-bootstrap CONF
# CONF holds one value per line: control plane URL, edge node id, enrollment token, agent
# source (download or package), agent URL or package name, SHA-256 of the download, the
# control plane's CA pin (empty: the system's CAs).
# The values are read, never evaluated by the shell, so none of them can run as a command.
set -eu

{
    IFS= read -r control_plane
    IFS= read -r node_id
    IFS= read -r token
    IFS= read -r agent_source
    IFS= read -r agent
    IFS= read -r agent_sha256
    IFS= read -r ca_pin
} <"$1"

export DEBIAN_FRONTEND=noninteractive
apt-get update
# Without --no-install-recommends, wireguard-tools pulls in a whole kernel image.
apt-get install -y --no-install-recommends wireguard-tools nginx curl ca-certificates
# The agent runs nginx with its own prefix and configuration; the distribution's service
# would hold ports 80 and 443.
systemctl disable --now nginx.service

case $agent_source in
download)
    download=$(mktemp)
    # From a control plane with its own CA (a pin), which the system does not know: what
    # vouches for the binary is the SHA-256 from this user data, checked below.
    insecure=
    case $agent in
    "$control_plane"/*) [ -z "$ca_pin" ] || insecure=--insecure ;;
    esac
    curl -fsSL ${insecure:+"$insecure"} --proto =https --retry 5 --max-time 600 -o "$download" "$agent"
    # A binary that does not match the expected checksum never runs: set -e stops here.
    echo "$agent_sha256  $download" | sha256sum -c -
    install -m 0755 "$download" /usr/local/bin/kokoa-edge
    rm -f "$download"
    ;;
package)
    apt-get install -y --no-install-recommends "$agent"
    ;;
*)
    echo "kokoa-edge-bootstrap: unknown agent source: $agent_source" >&2
    exit 1
    ;;
esac

# The token goes in the environment rather than after --token: a command line is visible
# to every process in ps. The pin is no secret.
set --
if [ -n "$ca_pin" ]; then
    set -- --ca-pin "$ca_pin"
fi
KOKOA_ENROLL_TOKEN=$token kokoa-edge enroll --control-plane "$control_plane" "$@"
systemctl daemon-reload
systemctl enable --now kokoa-edge.service

# /health answers once the agent serves its first configuration; wait at most ~5 minutes.
curl -fsS --retry 60 --retry-delay 5 --retry-all-errors --max-time 5 -o /dev/null \
    http://127.0.0.1/health
echo "kokoa-edge-bootstrap: edge $node_id serves"
