"""``v6node build-images``: the sidecar images, built from Debian packages with no registry.

Images equivalent to the reference's infrastructure images, from Debian 12 layers: one with
``squid``, ``openssh-client``, ``iptables`` and ``iproute2`` for

- ``<prefix>v6node-squid:<tag>``: Debian's squid with its stock configuration (which reads
  ``/etc/squid/conf.d/*.conf``, where the node writes the whitelist), run in the foreground
  with its logs on the container's output;
- ``<prefix>v6node-ssh-tunnel:<tag>``: keeps ``ssh -N <host>`` running with what the node
  writes into ``/root/.ssh`` (a pause between attempts, where the reference's loops at once);
- ``<prefix>v6node-network-config:<tag>``: ``sh`` and iptables, for the firewall helper;

and one with ``openvpn``, ``iptables`` and ``iproute2`` for the VPN (built only when asked
for, or with everything):

- ``<prefix>v6node-vpn-client:<tag>``: OpenVPN in the foreground with the configuration the
  node names in ``VPN_CONFIG``, its log on the output (``images.vpn_client``);
- ``<prefix>v6node-vpn-helper:<tag>``: holds a run's network namespace (``sleep``) and sets
  its route (``ip``), as the reference's ``alpine`` does (``images.alpine``).

The base is a local Debian 12 image (``--base``) or, without one, a minimal Debian made
here with ``debootstrap`` (root, and the ``debootstrap`` package, needed). Packages come from
the Debian mirror over plain http, which ``docker build`` reaches without a registry. An
image whose recipe (base, packages, scripts) has not changed is kept as it is.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker
import docker.errors
from attrs import frozen

from v6node.domain.errors import ContainerError

RECIPE_LABEL = "v6node.sidecar.recipe"
DEBIAN_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("squid", "openssh-client", "iptables", "iproute2")

_SQUID_ENTRY = """#!/bin/sh
# v6node's squid sidecar: Debian's squid with its stock squid.conf, which includes
# /etc/squid/conf.d/*.conf, where the node writes the whitelist. Its logs go to the output.
tail -qF /var/log/squid/cache.log /var/log/squid/access.log 2>/dev/null &
exec squid -N -f /etc/squid/squid.conf
"""
_SSH_ENTRY = """#!/bin/sh
# v6node's ssh tunnel sidecar: keeps `ssh -N <host>` running with the configuration the
# node wrote into /root/.ssh (config, known_hosts, <hostname>.pem).
if [ -z "$1" ]; then echo "usage: entry.sh <host of /root/.ssh/config>" >&2; exit 2; fi
while true; do
    ssh -N "$@"
    echo "ssh ended with exit code $?; trying again in 5 s" >&2
    sleep 5
done
"""
_DOCKERFILE = """FROM {base} AS packages
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {packages} \\
 && rm -rf /var/lib/apt/lists/*
FROM packages AS squid
COPY squid-entry.sh /app/entry.sh
ENTRYPOINT ["/app/entry.sh"]
FROM packages AS ssh-tunnel
COPY ssh-entry.sh /app/entry.sh
ENTRYPOINT ["/app/entry.sh"]
FROM packages AS network-config
CMD ["sh"]
"""
STAGES = ("squid", "ssh-tunnel", "network-config")
VPN_PACKAGES = ("openvpn", "iptables", "iproute2")
_VPN_ENTRY = """#!/bin/sh
# v6node's VPN client: OpenVPN in the foreground with the configuration the node wrote
# into /mnt/vpn and names in VPN_CONFIG; its log goes to the output, where the node reads
# "Initialization Sequence Completed" as ready.
if [ ! -r "$VPN_CONFIG" ]; then echo "no VPN configuration at VPN_CONFIG=$VPN_CONFIG" >&2; exit 2; fi
exec openvpn --cd "$(dirname "$VPN_CONFIG")" --config "$VPN_CONFIG"
"""
_VPN_DOCKERFILE = """FROM {base} AS vpn-packages
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {packages} \\
 && rm -rf /var/lib/apt/lists/*
FROM vpn-packages AS vpn-client
COPY vpn-entry.sh /app/entry.sh
ENTRYPOINT ["/app/entry.sh"]
FROM vpn-packages AS vpn-helper
CMD ["sleep", "infinity"]
"""
VPN_STAGES = ("vpn-client", "vpn-helper")
# The ``images`` key of the node config each image is for.
CONFIG_KEYS = {
    "squid": "squid", "ssh-tunnel": "ssh-tunnel", "network-config": "network_config",
    "vpn-client": "vpn_client", "vpn-helper": "alpine",
}


@frozen
class Built:
    stage: str
    image: str
    action: str  # "built" or "current"


def image_name(stage: str, prefix: str, tag: str) -> str:
    return f"{prefix}v6node-{stage}:{tag}"


@frozen
class _Family:
    """Images built from one Dockerfile (one recipe): its stages and the scripts it copies."""

    dockerfile: str
    packages: tuple[str, ...]
    stages: tuple[str, ...]
    scripts: tuple[tuple[str, str], ...]  # (file name, content)


_EGRESS = _Family(_DOCKERFILE, PACKAGES, STAGES, (("squid-entry.sh", _SQUID_ENTRY), ("ssh-entry.sh", _SSH_ENTRY)))
_VPN = _Family(_VPN_DOCKERFILE, VPN_PACKAGES, VPN_STAGES, (("vpn-entry.sh", _VPN_ENTRY),))


def build_sidecar_images(
    prefix: str, tag: str, base: str | None = None, mirror: str = DEFAULT_MIRROR, force: bool = False,
    vpn: bool = True, egress: bool = True,
) -> list[Built]:
    """Build the egress images (``egress``) and the VPN images (``vpn``) that are not current."""
    client = docker.from_env(timeout=900)
    try:
        base = base or _debootstrap_base(client, prefix, mirror, force)
        try:
            base_id = client.api.inspect_image(base)["Id"]
        except docker.errors.ImageNotFound:
            raise ContainerError(f"the base image {base} is not present locally (a Debian 12 image)") from None
        families = ([_EGRESS] if egress else []) + ([_VPN] if vpn else [])
        return [built for family in families for built in _build(client, family, base, base_id, prefix, tag, force)]
    finally:
        client.close()


def _build(
    client: docker.DockerClient, family: _Family, base: str, base_id: str, prefix: str, tag: str, force: bool
) -> list[Built]:
    dockerfile = family.dockerfile.format(base=base, packages=" ".join(family.packages))
    recipe = _hash(base_id, dockerfile, *(script for _, script in family.scripts))
    results = []
    with tempfile.TemporaryDirectory(prefix="v6node-sidecars-") as context:
        folder = Path(context)
        (folder / "Dockerfile").write_text(dockerfile)
        for name, script in family.scripts:
            (folder / name).write_text(script)
            os.chmod(folder / name, 0o755)
        for stage in family.stages:
            name = image_name(stage, prefix, tag)
            if not force and _recipe_of(client, name) == recipe:
                results.append(Built(stage, name, "current"))
                continue
            try:
                client.images.build(
                    path=context, target=stage, tag=name, rm=True, forcerm=True, labels={RECIPE_LABEL: recipe}
                )
            except (docker.errors.BuildError, docker.errors.APIError) as exc:
                log = "".join(str(c.get("stream") or c.get("error") or "") for c in getattr(exc, "build_log", []))
                raise ContainerError(f"building {name} failed: {exc}\n{log[-3000:]}") from exc
            results.append(Built(stage, name, "built"))
    return results


def _recipe_of(client: docker.DockerClient, name: str) -> str | None:
    try:
        return (client.api.inspect_image(name)["Config"].get("Labels") or {}).get(RECIPE_LABEL)
    except docker.errors.ImageNotFound:
        return None


def _hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big") + part.encode("utf-8"))
    return digest.hexdigest()[:32]


def _debootstrap_base(client: docker.DockerClient, prefix: str, mirror: str, force: bool) -> str:
    """A minimal Debian 12 made with debootstrap and imported (no registry)."""
    name = f"{prefix}v6node-debian:{DEBIAN_SUITE}"
    recipe = _hash("debootstrap", DEBIAN_SUITE, mirror)
    if not force and _recipe_of(client, name) == recipe:
        return name
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        raise ContainerError(
            "making the Debian base needs root and debootstrap (apt-get install debootstrap); "
            "or name a local Debian 12 image with --base"
        )
    with tempfile.TemporaryDirectory(prefix="v6node-debian-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        archive = Path(scratch) / "rootfs.tar"
        for command in (
            ["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(rootfs), mirror],
            ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(archive), "."],
        ):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise ContainerError(f"{command[0]} failed: {(done.stderr or done.stdout)[-2000:]}")
        repository, tag = name.rsplit(":", 1)
        client.api.import_image_from_file(
            str(archive), repository=repository, tag=tag, changes=['CMD ["bash"]', f"LABEL {RECIPE_LABEL}={recipe}"]
        )
    return name
