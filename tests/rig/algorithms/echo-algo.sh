#!/bin/sh
# Writes {"echo": <input>} to the output file; the input is JSON text.
. /algo/common.sh
size=$(wc -c < "$INPUT_FILE")
{ printf '{"echo": '; cat "$INPUT_FILE"; printf '}'; } > "$OUTPUT_FILE"
echo "echo-algo: read $size bytes"
