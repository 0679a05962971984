#!/bin/sh
# Sleeps "seconds" (from the input JSON, default 3600), then writes {"slept": N}.
# As PID 1 the shell ignores SIGTERM unless it traps it; sleeping in the background and
# waiting lets the trap run at once.
. /algo/common.sh
seconds=$(sed -n 's/.*"seconds"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$INPUT_FILE" | head -n 1)
seconds=${seconds:-3600}
echo "sleep-algo: sleeping $seconds seconds"
sleep "$seconds" &
child=$!
trap 'kill "$child" 2>/dev/null; exit 143' TERM INT
wait "$child"
printf '{"slept": %s}' "$seconds" > "$OUTPUT_FILE"
