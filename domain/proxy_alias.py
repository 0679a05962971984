"""The name algorithms may give the node's proxy: ``proxyserver``, as on the reference's network.

The reference joins its node's container to the algorithm network with that alias. Here the
proxy listens on the network's gateway (the network keeps traffic between containers off), so
each algorithm container gets a hosts entry that names the gateway instead: ``HOST`` still
gives the address, and an algorithm that uses ``http://proxyserver:$PORT`` reaches it too.
"""
from __future__ import annotations

import ipaddress

PROXY_ALIAS = "proxyserver"


def proxy_hosts(proxy_host: str) -> dict[str, str]:
    """The hosts entry for the proxy at ``proxy_host``; none when that is a name, not an address."""
    try:
        ipaddress.ip_address(proxy_host)
    except ValueError:
        return {}
    return {PROXY_ALIAS: proxy_host}
