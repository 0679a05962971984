"""`v6node build-images`: the egress helper images (Squid, SSH tunnel, firewall) from Debian packages."""
from __future__ import annotations

import click

from v6node.adapters.docker.sidecar_images import CONFIG_KEYS, DEFAULT_MIRROR, build_sidecar_images
from v6node.app.cli.common import failing_with_codes, package_version


@click.command("build-images")
@click.option("--base", help="A local Debian 12 image to build on (default: make one with debootstrap, as root).")
@click.option("--prefix", default="", show_default=True, help="Put before each image name (e.g. a registry).")
@click.option("--tag", default=None, help="The images' tag (default: the v6node version).")
@click.option("--mirror", default=DEFAULT_MIRROR, show_default=True, help="Debian mirror for debootstrap.")
@click.option("--force", is_flag=True, help="Build even when an image is current.")
@failing_with_codes
def build_images(base: str | None, prefix: str, tag: str | None, mirror: str, force: bool) -> None:
    """Build the Squid, SSH tunnel and firewall helper images from Debian packages (no registry).

    Prints each image and whether it was built or already current, then the `images`
    lines for the node config.
    """
    built = build_sidecar_images(prefix, tag or package_version(), base=base, mirror=mirror, force=force)
    for item in built:
        click.echo(f"{item.action:8} {item.image}")
    click.echo("images:")
    for item in built:
        click.echo(f"  {CONFIG_KEYS[item.stage]}: {item.image}")
