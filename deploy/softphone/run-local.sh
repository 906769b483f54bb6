#!/usr/bin/env bash
# The softphone's two helpers on this machine, for a demo or a development desk: rtpengine (WebRTC <-> RTP) and
# Kamailio with deploy/kamailio/softphone.cfg (SIP over WebSocket on ws://127.0.0.1:8088). Ctrl-C stops both.
# Then run Atiende with the softphone on (the same secret on both sides), e.g.:
#   SOFTPHONE_SECRET=$(openssl rand -hex 24) deploy/softphone/run-local.sh &
#   ATIENDE_AGENTS__SOFTPHONE="{enabled: true, secret: $SOFTPHONE_SECRET}" make run
# and set an agent's phone to "browser" (PUT /api/v1/agents/{id} with "phone": "browser").
# Debian packages: kamailio kamailio-websocket-modules kamailio-autheph-modules rtpengine-daemon.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
: "${SOFTPHONE_SECRET:?set SOFTPHONE_SECRET (the same value as agents.softphone.secret)}"
ATIENDE_SIP="${ATIENDE_SIP:-127.0.0.1:5060}"
DESK_ORIGIN="${DESK_ORIGIN:-http://127.0.0.1:8080}"
run="$(mktemp -d)"
trap 'kill 0 2>/dev/null; rm -rf "$run"' EXIT
rtpengine --foreground --log-stderr --table=-1 --interface=127.0.0.1 --listen-ng=127.0.0.1:2223 \
  --port-min=30000 --port-max=30999 &
kamailio -f "$here/deploy/kamailio/softphone.cfg" -DD -E -w "$run" -Y "$run" -P "$run/kamailio.pid" \
  -l udp:127.0.0.1:5080 -l tcp:127.0.0.1:8088 \
  -A "SOFTPHONE_SECRET=\"$SOFTPHONE_SECRET\"" -A 'ATIENDE_IP="127.0.0.1"' -A "ATIENDE_URI=\"sip:$ATIENDE_SIP\"" \
  -A 'RTPENGINE_SOCK="udp:127.0.0.1:2223"' -A "WS_PORT=8088" -A "ALLOWED_ORIGIN=\"$DESK_ORIGIN\"" &
wait
