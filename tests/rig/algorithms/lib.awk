# Helpers for the busybox test algorithms (busybox has no base32 applet).
#
# b32decode(s): the node's env encoding reversed: base32 with '=' written as '!'.
# A value that is not valid base32 is returned unchanged, as the vantage6 wrapper does.
function b32decode(s,    t, n, stripped, pad, i, v, bits, nbits, out) {
    t = s
    gsub(/!/, "=", t)
    n = length(t)
    if (n % 8 != 0 || t !~ /^[A-Z2-7]*=*$/) return s
    stripped = t
    sub(/=+$/, "", stripped)
    pad = n - length(stripped)
    if (pad != 0 && pad != 1 && pad != 3 && pad != 4 && pad != 6) return s
    out = ""; bits = 0; nbits = 0
    for (i = 1; i <= length(stripped); i++) {
        v = index("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", substr(stripped, i, 1)) - 1
        bits = or(lshift(bits, 5), v); nbits += 5
        if (nbits >= 8) {
            nbits -= 8
            out = out sprintf("%c", and(rshift(bits, nbits), 255))
            bits = and(bits, lshift(1, nbits) - 1)
        }
    }
    return out
}

# json_string(s): s as a JSON string literal; bytes >= 0x80 pass through (UTF-8 stays UTF-8).
function json_string(s,    i, c, o, out) {
    if (!_ord_ready) { for (i = 1; i < 256; i++) _ORD[sprintf("%c", i)] = i; _ord_ready = 1 }
    out = "\""
    for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1); o = _ORD[c]
        if (c == "\"") out = out "\\\""
        else if (c == "\\") out = out "\\\\"
        else if (o < 32 || o == 127) out = out sprintf("\\u%04x", o)
        else out = out c
    }
    return out "\""
}
