#!/bin/sh
# A test SSH server: user "tunnel" logs in with the key in $AUTHORIZED_KEY (no password);
# two web services listen on its loopback only, where nothing but an SSH tunnel reaches them.
set -e
mkdir -p /home/tunnel/.ssh
printf '%s\n' "$AUTHORIZED_KEY" > /home/tunnel/.ssh/authorized_keys
chown -R tunnel /home/tunnel/.ssh && chmod 700 /home/tunnel/.ssh && chmod 600 /home/tunnel/.ssh/authorized_keys
cd /srv/one && python3 -m http.server 8001 --bind 127.0.0.1 >/dev/null 2>&1 &
cd /srv/two && python3 -m http.server 8002 --bind 127.0.0.1 >/dev/null 2>&1 &
exec /usr/sbin/sshd -D -e -o PasswordAuthentication=no -o PermitRootLogin=no -o AllowTcpForwarding=yes
