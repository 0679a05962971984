# Writes {"env": {NAME: decoded value, ...}, "mounts": [paths under /mnt, two levels]}.
BEGIN {
    out = b32decode(ENVIRON["OUTPUT_FILE"])
    n = 0
    for (name in ENVIRON) names[++n] = name
    # insertion sort: busybox awk has no asort
    for (i = 2; i <= n; i++) { k = names[i]; for (j = i - 1; j > 0 && names[j] > k; j--) names[j + 1] = names[j]; names[j + 1] = k }
    text = "{\"env\": {"
    for (i = 1; i <= n; i++) text = text (i > 1 ? ", " : "") json_string(names[i]) ": " json_string(b32decode(ENVIRON[names[i]]))
    text = text "}, \"mounts\": ["
    m = 0
    cmd = "find /mnt -mindepth 1 -maxdepth 2 | sort"
    while ((cmd | getline path) > 0) text = text (m++ > 0 ? ", " : "") json_string(path)
    close(cmd)
    text = text "]}"
    printf "%s", text > out
    close(out)
    print "env-algo: wrote " n " variables and " m " paths"
}
