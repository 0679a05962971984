# Sourced by the busybox test algorithms.
decode() { V="$1" awk -f /algo/lib.awk -f /algo/decode.awk; }
INPUT_FILE=$(decode "$INPUT_FILE")
OUTPUT_FILE=$(decode "$OUTPUT_FILE")
