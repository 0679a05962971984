"""TunnelManager as one SSH client container per tunnel (the reference's ssh-tunnel image, or v6node's own).

The image's entry point keeps ``ssh -N <ssh host>`` running and reads ``/root/.ssh``: the
node writes ``config``, ``known_hosts`` and ``<hostname>.pem`` (all 0600, owned by root)
into a volume of the tunnel's own mounted there, and passes the SSH host as the command,
as the reference does. Unlike the reference, every tunnel has its own container
(``vantage6-<node>-ssh-tunnel-<hostname>``) and volume, so several tunnels work at once.

Differences in the files: the tunnel listens only on its address on the algorithm network
(the reference's ``bind.ip``, usually 0.0.0.0, would also open it on the sidecar network);
``known_hosts`` names the server as ``[host]:port`` when the port is not 22 (the reference
writes the bare host, which ssh then never matches); password and keyboard-interactive
logins are off and ``BatchMode`` is on, so a refused key fails at once instead of waiting
for a prompt. Privileges: every capability dropped (ssh needs none); read-only root.
"""
from __future__ import annotations

from v6node.adapters.docker.sidecars import SidecarLauncher, SidecarPlan
from v6node.domain.egress import SIDECAR_SSH_TUNNEL, Sidecar, SidecarExit, SshTunnelConfig, sidecar_container_name
from v6node.domain.errors import SidecarFailed
from v6node.ports.tunnel_manager import TunnelManager

SSH_FOLDER = "/root/.ssh"

# What ssh prints -> the cause in the operator's terms. These never pass by waiting longer.
_PERMANENT = (
    ("Host key verification failed", "the SSH server's host key does not match ssh.fingerprint (host key verification failed)"),
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "the SSH server's host key does not match ssh.fingerprint"),
    ("Permission denied", "the SSH server refused the key of user {user} (permission denied)"),
    ("invalid format", "ssh cannot read the private key (invalid format, or protected by a passphrase)"),
    ("bad permissions", "ssh refused the private key file's permissions"),
    ("Could not resolve hostname", "the SSH host {host} cannot be resolved"),
    ("cannot listen to port", "the tunnel cannot listen on its port {bind}"),
    ("Address already in use", "the tunnel cannot listen on its port {bind} (address already in use)"),
)
# These may pass (the server is starting); they are the reason given when the wait runs out.
_TRANSIENT = (
    ("Connection refused", "the SSH server {host}:{port} refused the connection"),
    ("Connection timed out", "the SSH server {host}:{port} did not answer (connection timed out)"),
    ("No route to host", "there is no route to the SSH server {host}:{port}"),
    ("Network is unreachable", "there is no route to the SSH server {host}:{port} (network unreachable)"),
)


def ssh_config(tunnel: SshTunnelConfig, listen: str) -> str:
    options = [
        ("HostName", tunnel.ssh_host),
        ("User", tunnel.username),
        ("Port", str(tunnel.ssh_port)),
        ("IdentityFile", f"{SSH_FOLDER}/{tunnel.hostname}.pem"),
        ("IdentitiesOnly", "yes"),
        ("PubkeyAuthentication", "yes"),
        ("PasswordAuthentication", "no"),
        ("KbdInteractiveAuthentication", "no"),
        ("BatchMode", "yes"),
        ("StrictHostKeyChecking", "yes"),
        ("UserKnownHostsFile", f"{SSH_FOLDER}/known_hosts"),
        ("GlobalKnownHostsFile", "/dev/null"),
        ("CheckHostIP", "no"),
        ("AddressFamily", "inet"),
        ("LocalForward", f"{listen}:{tunnel.bind_port} {tunnel.dest_ip}:{tunnel.dest_port}"),
        ("ExitOnForwardFailure", "yes"),
        ("ServerAliveInterval", "10"),
        ("ServerAliveCountMax", "3"),
        ("ConnectTimeout", "15"),
    ]
    body = "".join(f"    {key} {value}\n" for key, value in options)
    return f"# ssh tunnel '{tunnel.hostname}', written by the v6node node at every start\nHost {tunnel.ssh_host}\n{body}"


def known_hosts(tunnel: SshTunnelConfig) -> str:
    name = tunnel.ssh_host if tunnel.ssh_port == 22 else f"[{tunnel.ssh_host}]:{tunnel.ssh_port}"
    return f"{name} {tunnel.fingerprint}\n"


def diagnose(tunnel: SshTunnelConfig, output: str, table: tuple[tuple[str, str], ...] = _PERMANENT) -> str | None:
    for needle, reason in table:
        if needle in output:
            return reason.format(user=tunnel.username, host=tunnel.ssh_host, port=tunnel.ssh_port, bind=tunnel.bind_port)
    return None


class DockerTunnelManager(TunnelManager):
    """One ssh client container per tunnel, reachable by algorithms at ``<hostname>:<bind port>``."""

    def __init__(self, launcher: SidecarLauncher, node_name: str, image: str) -> None:
        self.launcher = launcher
        self.node_name = node_name
        self.image = image
        self._addresses: dict[str, str] = {}

    async def start(self, tunnel: SshTunnelConfig, network: str) -> Sidecar:
        what = f"ssh tunnel '{tunnel.hostname}'"
        try:
            with open(tunnel.key_file, "rb") as handle:
                key = handle.read()
        except OSError as exc:
            raise SidecarFailed(what, f"cannot read the private key {tunnel.key_file}: {exc.strerror or exc}") from exc

        def files(address: str) -> dict[str, tuple[bytes, int]]:
            return {
                "config": (ssh_config(tunnel, address).encode("utf-8"), 0o600),
                "known_hosts": (known_hosts(tunnel).encode("utf-8"), 0o600),
                f"{tunnel.hostname}.pem": (key, 0o600),
            }

        plan = SidecarPlan(
            kind=SIDECAR_SSH_TUNNEL,
            what=what,
            name=sidecar_container_name(self.node_name, SIDECAR_SSH_TUNNEL, tunnel.hostname),
            image=self.image,
            alias=tunnel.hostname,
            port=tunnel.bind_port,
            volume=f"vantage6-{self.node_name}-ssh-{tunnel.hostname}-vol",
            mount_target=SSH_FOLDER,
            files=files,
            command=(tunnel.ssh_host,),
            tmpfs={"/tmp": "rw,nosuid,nodev,mode=1777,size=16m"},
            diagnose=lambda output: diagnose(tunnel, output),
        )
        try:
            sidecar = await self.launcher.launch(plan, network, preferred=self._addresses.get(tunnel.hostname))
        except SidecarFailed as exc:
            transient = diagnose(tunnel, exc.reason, _TRANSIENT)
            if transient is not None and transient not in exc.reason:
                raise SidecarFailed(what, f"{transient}; {exc.reason}") from exc
            raise
        self._addresses[tunnel.hostname] = sidecar.address
        return sidecar

    async def wait(self, sidecar: Sidecar) -> SidecarExit:
        return await self.launcher.wait(sidecar)

