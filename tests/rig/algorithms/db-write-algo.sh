#!/bin/sh
# Tries to change the first requested database: appends a line to the file its
# <LABEL>_DATABASE_URI names. Writes {"wrote": "<uri>"} when that worked; exits 1 when refused.
. /algo/common.sh
labels=$(decode "$USER_REQUESTED_DATABASE_LABELS")
label=$(echo "${labels%%,*}" | tr 'a-z' 'A-Z')
eval "uri=\${${label}_DATABASE_URI}"
uri=$(decode "$uri")
echo "db-write-algo: appending to $uri"
if echo "written by db-write-algo" >> "$uri"; then
    printf '{"wrote": "%s"}' "$uri" > "$OUTPUT_FILE"
    echo "db-write-algo: the write succeeded"
    exit 0
fi
echo "db-write-algo: the write was refused" >&2
exit 1
