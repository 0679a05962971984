"""Read ``vpn_subnet`` and the VPN's images (``images.vpn_client``, ``images.alpine``, ``alpine``)."""
from __future__ import annotations

from v6node.app.config_section import Section
from v6node.domain.vpn import DEFAULT_VPN_CLIENT_IMAGE, DEFAULT_VPN_HELPER_IMAGE, VpnConfig, vpn_subnet


def parse_vpn(root: Section) -> VpnConfig | None:
    """None without ``vpn_subnet`` (the VPN is off: nothing of it is made, pulled or asked for).

    A ``vpn_subnet`` that is not an IPv4 network in CIDR form is a ``ConfigError`` (the
    reference accepts anything and fails later). The helper image is ``images.alpine``, else
    the top-level ``alpine`` (which is what the reference reads), else the default.
    """
    subnet = root.string("vpn_subnet", nullable=True)
    if not subnet:
        return None
    try:
        network = vpn_subnet(subnet.strip())
    except ValueError as exc:
        raise root.fail("vpn_subnet", f"{exc}, got {subnet!r}") from None
    images = root.mapping("images")
    return VpnConfig(
        subnet=str(network),
        client_image=images.string("vpn_client", nullable=True) or DEFAULT_VPN_CLIENT_IMAGE,
        helper_image=images.string("alpine", nullable=True) or root.string("alpine", nullable=True)
        or DEFAULT_VPN_HELPER_IMAGE,
    )
