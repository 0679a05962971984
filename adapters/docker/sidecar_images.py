"""``v6node build-images``: the sidecar images, built from Debian packages with no registry.

Three images equivalent to the reference's infrastructure images, from one Debian 12
layer with ``squid``, ``openssh-client`` and ``iptables``:

- ``<prefix>v6node-squid:<tag>``: Debian's squid with its stock configuration (which reads
  ``/etc/squid/conf.d/*.conf``, where the node writes the whitelist), run in the foreground
  with its logs on the container's output;
- ``<prefix>v6node-ssh-tunnel:<tag>``: keeps ``ssh -N <host>`` running with what the node
  writes into ``/root/.ssh`` (a pause between attempts, where the reference's loops at once);
- ``<prefix>v6node-network-config:<tag>``: ``sh`` and iptables, for the firewall helper.

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
# The ``images`` key of the node config each image is for.
CONFIG_KEYS = {"squid": "squid", "ssh-tunnel": "ssh-tunnel", "network-config": "network_config"}


@frozen
class Built:
    stage: str
    image: str
    action: str  # "built" or "current"


def image_name(stage: str, prefix: str, tag: str) -> str:
    return f"{prefix}v6node-{stage}:{tag}"


def build_sidecar_images(
    prefix: str, tag: str, base: str | None = None, mirror: str = DEFAULT_MIRROR, force: bool = False
) -> list[Built]:
    client = docker.from_env(timeout=900)
    try:
        base = base or _debootstrap_base(client, prefix, mirror, force)
        try:
            base_id = client.api.inspect_image(base)["Id"]
        except docker.errors.ImageNotFound:
            raise ContainerError(f"the base image {base} is not present locally (a Debian 12 image)") from None
        dockerfile = _DOCKERFILE.format(base=base, packages=" ".join(PACKAGES))
        recipe = _hash(base_id, dockerfile, _SQUID_ENTRY, _SSH_ENTRY)
        results = []
        with tempfile.TemporaryDirectory(prefix="v6node-sidecars-") as context:
            folder = Path(context)
            (folder / "Dockerfile").write_text(dockerfile)
            for name, script in (("squid-entry.sh", _SQUID_ENTRY), ("ssh-entry.sh", _SSH_ENTRY)):
                (folder / name).write_text(script)
                os.chmod(folder / name, 0o755)
            for stage in STAGES:
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
    finally:
        client.close()


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
