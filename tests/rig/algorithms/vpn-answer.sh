#!/bin/sh
# vpn-algo's listener: its input and output are the connection; keeps what it got as the result.
read -r line
echo "ack:$line"
printf '{"role":"listen","received":"%s"}' "$line" > "$OUTPUT_FILE"
