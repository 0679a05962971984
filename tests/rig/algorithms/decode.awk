BEGIN { printf "%s", b32decode(ENVIRON["V"]) }
