"""VpnClient as an OpenVPN client container (the reference's vpn-client image, or v6node's own).

The client is a sidecar (see ``sidecars``): made on the node's sidecar network (its way to
the VPN server) and joined to the algorithm network at a fixed address of its service
range, with the configuration copied into a volume of its own at ``/mnt/vpn`` and
``VPN_CONFIG`` naming it, as the reference's image expects. It has NET_ADMIN (the tunnel,
its NAT rules) and ``/dev/net/tun`` and nothing else; IP forwarding is on in its own
network namespace only. It is ready when OpenVPN says "Initialization Sequence Completed"
(read from its output as it comes, no polling); a certificate the server refuses, a
configuration OpenVPN rejects or a container that stops fail at once with the reason.

Host rules (``HostRules``, tagged ``v6node:<node>:vpn``) let traffic between the VPN subnet
and the algorithm network's bridge pass the engine's isolation of that network::

    -i <bridge> -o <bridge> -d <vpn subnet> -j ACCEPT   (an algorithm's helper -> the client)
    -i <bridge> -o <bridge> -s <vpn subnet> -j ACCEPT   (the client -> a helper)

Unlike the reference's rules they match only traffic that stays on the bridge; nothing
else of the host is opened, and algorithms without a helper still reach nothing.
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import suppress

import docker.errors

from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.errors import docker_errors
from v6node.adapters.docker.host_rules import HostRules
from v6node.adapters.docker.networks import bridge_name, network_named
from v6node.adapters.docker.sidecars import SidecarLauncher, SidecarPlan, ensure_local_image
from v6node.adapters.vpn import run_helpers as helpers
from v6node.domain.containers import LABEL_RUN
from v6node.domain.egress import Sidecar, SidecarExit
from v6node.domain.errors import ContainerError, SidecarFailed
from v6node.domain.vpn import (
    SIDECAR_VPN_CLIENT,
    VPN_CONFIG_FILE,
    ForwardedPort,
    VpnConnection,
    VpnRunNetwork,
    algorithm_ports,
    decode_ports,
    forward,
    ovpn_text,
    vpn_client_name,
)
from v6node.ports.vpn_client import VpnClient

WHAT = "the VPN client"
CONFIG_FOLDER = "/mnt/vpn"
READY_LINE = "Initialization Sequence Completed"
MAX_CONFIG_SIZE = 1024 * 1024
_TMPFS = "rw,nosuid,nodev,mode=1777,size=16m"
# What OpenVPN prints -> the cause in the operator's terms. None of these passes by waiting.
_PERMANENT = (
    ("AUTH_FAILED", "the VPN server refused the client (AUTH_FAILED)"),
    ("VERIFY ERROR", "a certificate did not verify: the configuration's CA does not match the VPN server ({line})"),
    ("certificate verify failed", "a certificate did not verify ({line})"),
    ("Options error", "OpenVPN cannot use the configuration ({line})"),
    ("Cannot load", "OpenVPN cannot load a key or certificate of the configuration ({line})"),
    ("Cannot resolve host address", "the VPN server's name cannot be resolved ({line})"),
    ("Cannot open TUN/TAP dev", "OpenVPN cannot open /dev/net/tun ({line})"),
    ("Exiting due to fatal error", "OpenVPN stopped ({line}); before that it said: {before}"),
)


def vpn_tag(node_name: str) -> str:
    return f"v6node:{node_name}:vpn"


def diagnose(line: str, before: Iterable[str] = ()) -> str | None:
    """The cause in the operator's terms when ``line`` says OpenVPN cannot go on; ``before``
    (the lines that came before it) names the cause when the line itself does not."""
    for needle, reason in _PERMANENT:
        if needle in line:
            return reason.format(line=line.strip(), before=" | ".join(before) or "nothing")
    return None


def read_config(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_SIZE + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_CONFIG_SIZE:
        raise SidecarFailed(WHAT, f"the VPN configuration {path} is larger than {MAX_CONFIG_SIZE} bytes")
    return data.decode("utf-8", "replace")


def write_config(path: str, text: str) -> None:
    """LF line ends, mode 0600 (it holds the client's private key), replaced at once."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temporary = f"{path}.new"
    with suppress(FileNotFoundError):
        os.unlink(temporary)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(ovpn_text(text))
    os.replace(temporary, path)


class DockerVpnClient(VpnClient):
    def __init__(
        self,
        runtime: DockerContainerRuntime,
        launcher: SidecarLauncher,
        node_name: str,
        client_image: str,
        helper_image: str,
        network_config_image: str,
        folder: str,
        marker_file: str,
    ) -> None:
        self.runtime = runtime
        self.launcher = launcher
        self.node_name = node_name
        self.client_image = client_image
        self.helper_image = helper_image
        self.config_file = os.path.join(folder, VPN_CONFIG_FILE)
        self.rules = HostRules(runtime, node_name, network_config_image, vpn_tag(node_name), marker_file, "vpn")
        self._lock = asyncio.Lock()  # one change of the client's forwarding at a time
        self._connection: VpnConnection | None = None
        self._local_subnet: str | None = None
        self._address: str | None = None  # on the algorithm network: a restarted client keeps it
        self._forwarded: set[int] = set()  # runs this process forwarded and has not released

    # --- configuration ----------------------------------------------------------------------
    async def saved_config(self) -> str | None:
        return await asyncio.to_thread(read_config, self.config_file)

    async def save_config(self, text: str) -> None:
        await asyncio.to_thread(write_config, self.config_file, text)

    # --- the client -------------------------------------------------------------------------
    async def connect(self, network: str) -> VpnConnection:
        config = await self.saved_config()
        if config is None:
            raise SidecarFailed(WHAT, f"there is no VPN configuration ({self.config_file})")
        await ensure_local_image(self.runtime, self.helper_image, "the VPN helper (images.alpine)")
        plan = SidecarPlan(
            kind=SIDECAR_VPN_CLIENT,
            what=WHAT,
            name=vpn_client_name(self.node_name),
            image=self.client_image,
            alias=vpn_client_name(self.node_name),
            port=0,
            volume=f"vantage6-{self.node_name}-vpn-vol",
            mount_target=CONFIG_FOLDER,
            files=lambda _address: {VPN_CONFIG_FILE: (config.encode("utf-8"), 0o600)},
            cap_add=("NET_ADMIN",),
            tmpfs={"/run": _TMPFS, "/tmp": _TMPFS},
            environment={"VPN_CONFIG": f"{CONFIG_FOLDER}/{VPN_CONFIG_FILE}"},
            devices=("/dev/net/tun",),
            sysctls={"net.ipv4.ip_forward": "1"},
            ready=self._until_connected,
        )
        async with self._lock:
            self._connection = None
            sidecar = await self.launcher.launch(plan, network, preferred=self._address)
            self._address = sidecar.address
            try:
                connection = await self._configure(sidecar, network)
            except BaseException:
                with suppress(ContainerError):
                    await self.runtime.remove(sidecar.container_id)
                raise
            self._connection = connection
        return connection

    async def _until_connected(self, sidecar: Sidecar) -> None:
        seen: deque[str] = deque(maxlen=5)
        lines = self.runtime.follow_logs(sidecar.container_id)
        try:
            async for line in lines:
                if READY_LINE in line:
                    return
                reason = diagnose(line, seen)
                if line.strip():
                    seen.append(line.strip())
                if reason is not None:
                    raise SidecarFailed(WHAT, reason)
        finally:
            close = getattr(lines, "aclose", None)
            if close is not None:
                await close()
        raise SidecarFailed(WHAT, f"its container stopped: {' | '.join(seen) or 'no output'}")

    async def _configure(self, sidecar: Sidecar, network: str) -> VpnConnection:
        api = self.runtime.api
        address = await self.runtime.call(helpers.tunnel_address, api, sidecar.container_id)
        if address is None:
            raise SidecarFailed(WHAT, "OpenVPN says it is connected, but its tunnel (tun0) has no IPv4 address")
        await self.runtime.call(helpers.run_in, api, sidecar.container_id, helpers.client_nat_script(), "the VPN client's NAT")
        details = await self.runtime.call(network_named, api, network)
        subnets = [c.get("Subnet") for c in (details.get("IPAM") or {}).get("Config") or [] if c.get("Subnet")]
        self._local_subnet = next((s for s in subnets if ipaddress.ip_network(s).version == 4), None)
        connection = VpnConnection(sidecar, address)
        await self._restore(connection, network)
        return connection

    async def _restore(self, connection: VpnConnection, network: str) -> None:
        """The forwarding of every run whose helper still runs (made by an earlier client or
        node process). A helper of an earlier process whose algorithm no longer runs goes."""
        api = self.runtime.api
        running = await self.runtime.call(helpers.running_algorithms, api, self.node_name)
        for found in await self.runtime.call(helpers.helpers_of, api, self.node_name):
            labels = found.get("Labels") or {}
            run_id = int(labels.get(LABEL_RUN) or 0)
            ours = run_id in self._forwarded  # its algorithm may be starting right now
            if found.get("State") != "running" or not (ours or run_id in running):
                await self.runtime.remove(found["Id"])
                continue
            ports = decode_ports(labels.get(helpers.PORTS_LABEL, ""))
            helper = await self.runtime.call(helpers.address_on, api, found["Id"], network)
            await self._forward(connection, run_id, found["Id"], helper, ports)

    async def _forward(
        self, connection: VpnConnection, run_id: int, helper_id: str, helper: str, ports: tuple[ForwardedPort, ...]
    ) -> None:
        api = self.runtime.api
        await self.runtime.call(
            helpers.route_through, api, self.node_name, self.helper_image, helper_id, connection.sidecar.address
        )
        script = helpers.unforwarding_script(run_id) + helpers.forwarding_script(
            run_id, connection.vpn_address, self._local_subnet, helper, ports
        )
        await self.runtime.call(helpers.run_in, api, connection.sidecar.container_id, script, f"forwarding run {run_id}")

    async def wait(self, connection: VpnConnection) -> SidecarExit:
        return await self.launcher.wait(connection.sidecar)

    async def disconnect(self) -> None:
        async with self._lock:
            self._connection = None
            name = vpn_client_name(self.node_name)

            def remove() -> None:
                with docker_errors(f"removing {name}"):
                    with suppress(docker.errors.NotFound):
                        self.runtime.api.remove_container(name, force=True)

            await self.runtime.call(remove)
            await self.runtime.remove_volume(f"vantage6-{self.node_name}-vpn-vol")

    # --- the host -----------------------------------------------------------------------------
    async def open_forwarding(self, network: str, subnet: str) -> None:
        bridge = bridge_name(await self.runtime.call(network_named, self.runtime.api, network))
        on_bridge = f"-i {bridge} -o {bridge}"
        await self.rules.replace([f"{on_bridge} -d {subnet}", f"{on_bridge} -s {subnet}"], f"{bridge} {subnet}")

    async def close_forwarding(self) -> None:
        await self.rules.remove()

    # --- runs -----------------------------------------------------------------------------------
    async def forward_run(
        self, run_id: int, image: str, network: str, extra_hosts: Mapping[str, str] | None = None
    ) -> VpnRunNetwork:
        api = self.runtime.api
        async with self._lock:
            connection = self._connection
            if connection is None:
                raise SidecarFailed(WHAT, "it is not connected")
            exposed, labels = await self.runtime.call(_image_ports, api, image)
            taken = await self.runtime.call(helpers.taken_ports, api, connection.sidecar.container_id)
            try:
                ports = forward(algorithm_ports(exposed, labels), taken)
            except ValueError as exc:
                raise SidecarFailed(WHAT, str(exc)) from None
            helper_id, helper = await self.runtime.call(
                helpers.make_helper, api, self.node_name, self.helper_image, run_id, network, ports, extra_hosts
            )
            try:
                await self._forward(connection, run_id, helper_id, helper, ports)
            except BaseException:
                with suppress(ContainerError):
                    await self.runtime.remove(helper_id)
                raise
            self._forwarded.add(run_id)
        return VpnRunNetwork(run_id, helper_id, ports)

    async def release_run(self, run_id: int) -> bool:
        api = self.runtime.api
        async with self._lock:
            self._forwarded.discard(run_id)
            found = await self.runtime.call(helpers.helpers_of, api, self.node_name, run_id)
            if not found:
                return False
            if self._connection is not None:
                with suppress(ContainerError):  # a client that is gone took its rules along
                    await self.runtime.call(
                        helpers.run_in, api, self._connection.sidecar.container_id,
                        helpers.unforwarding_script(run_id), f"removing the forwarding of run {run_id}",
                    )
            for container in found:
                await self.runtime.remove(container["Id"])
        return True


def _image_ports(api: docker.APIClient, image: str) -> tuple[list[str], dict[str, str]]:
    with docker_errors(f"inspecting image {image}"):
        config = api.inspect_image(image).get("Config") or {}
    return list((config.get("ExposedPorts") or {}).keys()), dict(config.get("Labels") or {})
