"""WhitelistProxy as a Squid sidecar container (the reference's squid image, or v6node's own).

The image runs Debian's squid with its stock ``/etc/squid/squid.conf``, which includes
``/etc/squid/conf.d/*.conf`` after its own safety rules and before its final ``deny all``
(and listens on 3128); the node writes the whitelist there as ``squid.conf`` (mode 0600), as
the reference does. Differences from the reference's file: a whitelist with a single
domain or IP allows it (the reference's template only allows lists of two or more), an
empty port list refuses everything instead of making Squid fail, requests to loopback and
link-local addresses (cloud metadata services) are refused, and nothing is cached.

Privileges: all capabilities dropped except SETUID and SETGID (Squid starts as root, reads
its configuration and changes to the ``proxy`` user); read-only root with tmpfs at ``/run``
and ``/tmp``, and at ``/var/log/squid`` and ``/var/spool/squid`` owned by Debian's ``proxy``
user (uid 13: both the reference's image and v6node's are Debian 12); without that Squid
would need CHOWN to hand over the log files it creates as root (measured: it stops at its
first request). Squid needs no capability to listen on 3128.
"""
from __future__ import annotations

import re

from v6node.adapters.docker.sidecars import SidecarLauncher, SidecarPlan
from v6node.domain.egress import (
    SIDECAR_SQUID,
    SQUID_ALIAS,
    SQUID_PORT,
    Sidecar,
    SidecarExit,
    WhitelistConfig,
    sidecar_container_name,
)
from v6node.ports.whitelist_proxy import WhitelistProxy

CONFIG_FOLDER = "/etc/squid/conf.d"
_TMPFS = "rw,nosuid,nodev,mode=1777,size=64m"
# Owned by Debian's ``proxy`` user (uid and gid 13 in every Debian), which writes the logs
# and the spool: Squid creates them as root and then hands them over, which needs CHOWN.
_PROXY_TMPFS = "rw,nosuid,nodev,uid=13,gid=13,mode=0750,size=64m"
_FATAL = re.compile(r"^.*\bFATAL:.*$", re.MULTILINE)


def squid_conf(whitelist: WhitelistConfig, node_name: str) -> str:
    """The whitelist in Squid's syntax: ports first, then domains and IPs, everything else refused."""
    lines = [
        f"# The whitelist of v6node node '{node_name}'; the node writes this file at every start.",
        "http_access deny to_localhost",
        "acl v6node_link_local dst 169.254.0.0/16 fe80::/10",
        "http_access deny v6node_link_local",
    ]
    if whitelist.ports:
        lines += [
            "acl v6node_ports port " + " ".join(str(p) for p in whitelist.ports),
            "http_access deny !v6node_ports",
            "http_access deny CONNECT !v6node_ports",
        ]
        if whitelist.domains:
            lines += ["acl v6node_domains dstdomain " + " ".join(whitelist.domains), "http_access allow v6node_domains"]
        if whitelist.ips:
            lines += ["acl v6node_ips dst " + " ".join(whitelist.ips), "http_access allow v6node_ips"]
    else:
        lines.append("# No port is whitelisted: every request is refused.")
    lines += ["http_access deny all", "cache deny all", ""]
    return "\n".join(lines)


def diagnose(output: str) -> str | None:
    fatal = _FATAL.search(output)
    return f"squid stopped on its configuration: {fatal.group(0).strip()}" if fatal else None


class DockerWhitelistProxy(WhitelistProxy):
    """Squid in a container next to the algorithm network, reachable there as ``squid:3128``."""

    def __init__(self, launcher: SidecarLauncher, node_name: str, image: str) -> None:
        self.launcher = launcher
        self.node_name = node_name
        self.image = image
        self._address: str | None = None

    async def start(self, whitelist: WhitelistConfig, network: str) -> Sidecar:
        conf = squid_conf(whitelist, self.node_name).encode("utf-8")
        plan = SidecarPlan(
            kind=SIDECAR_SQUID,
            what="the whitelist proxy (squid)",
            name=sidecar_container_name(self.node_name, SIDECAR_SQUID),
            image=self.image,
            alias=SQUID_ALIAS,
            port=SQUID_PORT,
            volume=f"vantage6-{self.node_name}-squid-vol",
            mount_target=CONFIG_FOLDER,
            files=lambda _address: {"squid.conf": (conf, 0o600)},
            cap_add=("SETUID", "SETGID"),
            tmpfs={"/run": _TMPFS, "/tmp": _TMPFS, "/var/log/squid": _PROXY_TMPFS, "/var/spool/squid": _PROXY_TMPFS},
            diagnose=diagnose,
        )
        sidecar = await self.launcher.launch(plan, network, preferred=self._address)
        self._address = sidecar.address
        return sidecar

    async def wait(self, sidecar: Sidecar) -> SidecarExit:
        return await self.launcher.wait(sidecar)
