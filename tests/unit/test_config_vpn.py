"""``vpn_subnet`` and the VPN's images in the node YAML; the VPN lines of check-config."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from v6node.app.cli import main
from v6node.app.config import load_config
from v6node.domain.config import NodeConfig
from v6node.domain.errors import ConfigError
from v6node.domain.vpn import DEFAULT_VPN_CLIENT_IMAGE, DEFAULT_VPN_HELPER_IMAGE, VpnConfig

BASE = "api_key: k\nserver_url: http://localhost\nport: 7601\napi_path: /api\n"


def load(tmp_path: Path, text: str = "") -> NodeConfig:
    path = tmp_path / "alpha.yaml"
    path.write_text(BASE + text)
    return load_config(path, default_data_dir=str(tmp_path / "data"))


def test_without_vpn_subnet_there_is_no_vpn(tmp_path: Path) -> None:
    assert load(tmp_path).vpn is None
    assert load(tmp_path, "vpn_subnet:\n").vpn is None  # null, as the reference's template writes it


def test_vpn_subnet_with_the_reference_images_by_default(tmp_path: Path) -> None:
    assert load(tmp_path, "vpn_subnet: 10.76.0.0/16\n").vpn == VpnConfig(
        "10.76.0.0/16", DEFAULT_VPN_CLIENT_IMAGE, DEFAULT_VPN_HELPER_IMAGE
    )
    assert DEFAULT_VPN_CLIENT_IMAGE == "harbor2.vantage6.ai/infrastructure/vpn-client:4.15"
    assert DEFAULT_VPN_HELPER_IMAGE == "harbor2.vantage6.ai/infrastructure/alpine:4.15"


def test_a_subnet_given_by_one_of_its_addresses_is_its_network(tmp_path: Path) -> None:
    assert load(tmp_path, "vpn_subnet: 10.76.3.4/16\n").vpn.subnet == "10.76.0.0/16"  # type: ignore[union-attr]


def test_images_vpn_client_and_alpine_override_the_defaults(tmp_path: Path) -> None:
    vpn = load(tmp_path, "vpn_subnet: 10.76.0.0/16\nimages:\n  vpn_client: my/vpn:1\n  alpine: my/alpine:1\n").vpn
    assert vpn is not None and (vpn.client_image, vpn.helper_image) == ("my/vpn:1", "my/alpine:1")


def test_the_top_level_alpine_key_of_the_reference_names_the_helper_image(tmp_path: Path) -> None:
    vpn = load(tmp_path, "vpn_subnet: 10.76.0.0/16\nalpine: my/alpine:2\n").vpn
    assert vpn is not None and vpn.helper_image == "my/alpine:2"


@pytest.mark.parametrize("subnet", ["10.76.0.0", "10.76.0.0/33", "vpn", "fd00::/64", "10.300.0.0/16", "'/16'"])
def test_a_malformed_vpn_subnet_is_an_error_naming_the_key(tmp_path: Path, subnet: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, f"vpn_subnet: {subnet}\n")
    assert "key 'vpn_subnet'" in str(raised.value)
    assert "IPv4 network in CIDR form" in str(raised.value)


def test_check_config_exits_2_on_a_malformed_vpn_subnet(tmp_path: Path) -> None:
    path = tmp_path / "alpha.yaml"
    path.write_text(BASE + "vpn_subnet: 10.76.0.0/40\n")
    result = CliRunner().invoke(main, ["check-config", "-c", str(path)])
    assert result.exit_code == 2
    assert f"{path}: key 'vpn_subnet': expected an IPv4 network in CIDR form" in result.output


def test_check_config_shows_the_vpn_and_its_images(tmp_path: Path) -> None:
    path = tmp_path / "alpha.yaml"
    path.write_text(BASE + "vpn_subnet: 10.76.0.0/16\n")
    result = CliRunner().invoke(main, ["check-config", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "vpn:          vpn_subnet 10.76.0.0/16; configuration <data folder>/vpn/vpn-config.ovpn.conf" in result.output
    assert f"client {DEFAULT_VPN_CLIENT_IMAGE}, helper {DEFAULT_VPN_HELPER_IMAGE}" in result.output
    without = tmp_path / "beta.yaml"
    without.write_text(BASE)
    assert "vpn:" not in CliRunner().invoke(main, ["check-config", "-c", str(without)]).output
