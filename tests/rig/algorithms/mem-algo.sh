#!/bin/sh
# Holds "megabytes" (from the input JSON, default 200) in memory at once: tail keeps the
# whole last line, and /dev/zero has no newline. Then writes {"held": N}.
# When tail is killed for memory the script still ends with exit code 0: only the
# engine's out-of-memory flag tells that it did not get what it asked for.
. /algo/common.sh
mb=$(sed -n 's/.*"megabytes"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$INPUT_FILE" | head -n 1)
mb=${mb:-200}
echo "mem-algo: holding $mb MB"
head -c "${mb}m" /dev/zero | tail > /dev/null
printf '{"held": %s}' "$mb" > "$OUTPUT_FILE"
