#!/bin/sh
# Two stations over the VPN. VPN_ROLE=listen: answer one message on port 8888 (exposed,
# label p8888=message) and return it. VPN_ROLE=talk: find the peer's address with
# GET vpn/algorithm/addresses (through the node's proxy), send the task input's "message"
# and return the answer. With a "gate" database (a folder) the talker first waits for the
# file "go" in it, so that a test can act before the exchange.
. /algo/common.sh
role=$(decode "$VPN_ROLE")
if [ "$role" = listen ]; then
    export OUTPUT_FILE
    echo "vpn-algo: listening on 8888"
    nc -l -p 8888 -e sh /algo/vpn-answer.sh
    echo "vpn-algo: answered"
    exit 0
fi
message=$(sed -n 's/.*"message": *"\([^"]*\)".*/\1/p' "$INPUT_FILE")
token=$(cat "$(decode "$TOKEN_FILE")")
api="$(decode "$HOST"):$(decode "$PORT")"
if [ -n "$GATE_DATABASE_URI" ]; then
    gate=$(decode "$GATE_DATABASE_URI")
    echo "vpn-algo: waiting for $gate/go"
    while [ ! -e "$gate/go" ]; do sleep 0.2; done
fi
i=0
while [ $i -lt 600 ]; do
    addresses=$(wget -qO- --header "Authorization: Bearer $token" "$api/vpn/algorithm/addresses?only_siblings=1" 2>/dev/null)
    ip=$(echo "$addresses" | sed -n 's/.*"ip": *"\([0-9.]*\)".*/\1/p')
    port=$(echo "$addresses" | sed -n 's/.*"port": *\([0-9]*\).*/\1/p')
    [ -n "$ip" ] && [ -n "$port" ] && break
    i=$((i + 1)); sleep 0.2
done
echo "vpn-algo: peer at $ip:$port"
reply=""; i=0
while [ -z "$reply" ] && [ $i -lt 300 ]; do
    reply=$(echo "$message" | timeout 5 nc "$ip" "$port" 2>/dev/null)
    [ -n "$reply" ] || sleep 0.2
    i=$((i + 1))
done
echo "vpn-algo: sent '$message', got '$reply'"
printf '{"role":"talk","peer":"%s:%s","sent":"%s","reply":"%s"}' "$ip" "$port" "$message" "$reply" > "$OUTPUT_FILE"
[ -n "$reply" ]
