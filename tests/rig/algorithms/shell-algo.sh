#!/bin/sh
# Runs the shell command in $SCRIPT (base32-encoded like every node env var, or plain).
. /algo/common.sh
script=$(decode "$SCRIPT")
eval "$script"
