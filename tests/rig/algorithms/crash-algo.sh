#!/bin/sh
echo "crash-algo: failing on purpose" >&2
exit 3
