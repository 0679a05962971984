"""A private Docker engine for the tests that stop and restart an engine.

The machine's own engine (the one ``scripts/setup-rig`` starts, pid in /var/run/docker.pid)
serves every container on the machine, other projects' included, so no test stops,
restarts, signals or reconfigures it. A test that needs an engine restart gets a
``PrivateEngine``: a second ``dockerd`` with everything of its own, started for that test
module and removed after it.

What it needs and why (measured on this kind of machine: Debian 12, Docker Engine
20.10.24 from ``docker.io``, cgroup v1, 2 cores, ext4 root, ``br_netfilter`` loaded):

- ``--data-root``, ``--exec-root``, ``--pidfile`` and ``-H unix://<dir>/docker.sock``
  in a fresh ``/tmp/v6pe-*`` folder. The exec root also holds the containerd that dockerd
  starts for itself (``<exec-root>/containerd/containerd.sock``), so the private engine
  shares no daemon with the machine's. The folder name is kept short: that socket path
  must fit the 108 bytes of a unix socket address. The default pid file is the machine
  engine's /var/run/docker.pid.
- ``--config-file`` pointing to an empty ``{}``: settings an administrator puts in
  /etc/docker/daemon.json (``hosts``, ``data-root``, ``bridge``, ...) must not apply, and
  some of them conflict with the flags above and stop dockerd.
- ``--bridge v6pe-<n>``: a bridge the rig creates (``ip link add ... type bridge``) with
  the address ``10.<n>.0.1/24``, for the default ``bridge`` network. Without ``--bridge``
  the engine takes ``docker0``, the machine engine's bridge, and ``--bip`` alone only
  sets the address of that same bridge (not tried, for that reason); ``--bridge=none``
  deletes the host's docker0. dockerd leaves a bridge it
  was given alone when it stops; the rig deletes it at the end.
- No ``--default-address-pool`` (nor ``default-address-pools`` in a config file): with
  one set, an engine that restarts on its data root (the fault the tests inject) deletes
  the interface named ``docker0`` - the machine engine's bridge, cutting off every
  container on it. Found in the full suite and reproduced alone (start, stop, start:
  docker0 gone); moby's start-up, on finding the stale default ``bridge`` network it then
  re-creates, removes "the default bridge interface" by its fixed name whenever address
  pools are configured and live-restore is off. Without a pool, the node's networks get
  the engine's built-in pools, from which dockerd skips every subnet that overlaps a route
  of the host, so they cannot collide with the machine engine's networks either. ``<n>``
  (for the default bridge's 10.<n>.0.1/24) is the first 10.x block in which no route or
  address of the machine lies, claimed by creating the bridge ``v6pe-<n>`` (``ip link
  add`` fails if another rig got there first), so two test runs side by side get two blocks.
- ``--iptables=false`` (and ``--ip6tables=false`` for newer engines where it defaults to
  true). With iptables on, a starting engine empties the ``DOCKER`` chains of the filter
  and nat tables it finds: measured in a scratch network namespace, where a marker rule
  put in filter ``DOCKER`` and a DNAT put in nat ``DOCKER`` (standing for the machine
  engine's port mappings) were gone once a dockerd had started there (0.4 s). In the machine's
  namespace that would wipe the machine engine's rules. With ``--iptables=false``,
  ``iptables-save`` taken after a start, a network create, a container run, two restarts
  and the removal showed no rule naming the private bridge or its 10.x block, no rule
  added, and none of the machine's removed but those of networks that the machine engine
  had deleted meanwhile for other tests. Containers of the private engine then have no
  NAT and no forwarding: the host's FORWARD policy is DROP and, with ``br_netfilter``,
  bridged traffic passes it, so two containers on one private network cannot reach each
  other whether the network's ``enable_icc`` is true or false (``nc`` timed out; the same
  probe on the machine engine with ICC on got through). The tests need neither; what they
  need is a container reaching its network's gateway address, which is the host's INPUT
  path (policy ACCEPT), and that works (an HTTP server bound to the gateway answered a
  container's ``wget``).
- ``--ip-forward=false``: the engine then never writes the host's ``ip_forward`` sysctl
  (it was already 1 here, so this changes nothing but guarantees it).
- Not a separate network namespace: dockerd with ``iptables`` on in its own namespace
  (``nsenter --net``; ``ip netns exec`` remounts /sys and dockerd stops with "Devices
  cgroup isn't mounted") leaves the host's chains alone, but then the algorithm network's
  gateway lives in that namespace: from the host, ``ip route get <gateway>`` goes out of
  ``eth0`` by the default route (an HTTP request to it got an answer from somewhere
  outside the machine). The node runs on the host, binds its proxy to that gateway and
  checks at start that a container reaches it, so it must share the host's namespace.

Times (measured, with other test runs busy on the machine): start until the socket
answers 0.2 s on a fresh or a reused data root; SIGTERM until exit 1.0 s with nothing
running, 1.2 s with a container that exits on SIGTERM, 12.8 s with one that ignores it (the
engine waits its 10 s stop timeout, then SIGKILLs it); the three 2 MB busybox test images
copied from the machine engine (``docker save`` streamed into ``/images/load``) in 0.6 s;
removal (contents, stop, folders, bridges) 1.2 s.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import docker
import docker.errors

# The machine engine's pid file: only ever read, to show that the tests left it running.
MACHINE_PID_FILE = Path("/var/run/docker.pid")

BRIDGE_PREFIX = "v6pe-"
# Second octets tried for the private engine's 10.<n>.0.0/16 block, in this order.
BLOCKS = [*range(200, 255), *range(100, 200)]
PREDEFINED_NETWORKS = {"bridge", "host", "none"}


def machine_engine_pid() -> int | None:
    """The pid of the machine's Docker engine, or None when it is not running (read only)."""
    try:
        return int(MACHINE_PID_FILE.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _root_prefix() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo", "-n"]


def _as_root(command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Directly as root, else through sudo (as ``scripts/setup-rig`` does)."""
    return subprocess.run(
        [*_root_prefix(), *command], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=check
    )


def _ip_json(*command: str) -> list[dict]:
    """``ip -j -4 <command>`` (reading needs no root)."""
    return json.loads(subprocess.run(["ip", "-j", "-4", *command], capture_output=True, text=True, check=True).stdout)


def _taken_ipv4() -> list[ipaddress.IPv4Network]:
    """Every IPv4 route (all tables) and address of the host."""
    taken: list[ipaddress.IPv4Network] = []
    for route in _ip_json("route", "show", "table", "all"):
        if route.get("dst") not in (None, "default"):
            taken.append(ipaddress.ip_network(route["dst"], strict=False))
    for link in _ip_json("addr"):
        for info in link.get("addr_info", []):
            taken.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
    return taken


def _claim_block() -> int:
    """A free 10.<n>.0.0/16 block, claimed by creating the bridge ``v6pe-<n>`` with 10.<n>.0.1/24."""
    taken = _taken_ipv4()
    for n in BLOCKS:
        block = ipaddress.ip_network(f"10.{n}.0.0/16")
        if any(block.overlaps(net) for net in taken):
            continue
        created = _as_root(["ip", "link", "add", f"{BRIDGE_PREFIX}{n}", "type", "bridge"], check=False)
        if created.returncode != 0:
            if "File exists" in created.stderr:
                continue  # another test run claimed it a moment ago
            raise RuntimeError(f"cannot create a bridge: {created.stderr.strip()}")
        try:
            _as_root(["ip", "addr", "add", f"10.{n}.0.1/24", "dev", f"{BRIDGE_PREFIX}{n}"])
            _as_root(["ip", "link", "set", f"{BRIDGE_PREFIX}{n}", "up"])
        except BaseException:
            _as_root(["ip", "link", "delete", f"{BRIDGE_PREFIX}{n}"], check=False)
            raise
        return n
    raise RuntimeError("no free 10.x.0.0/16 block for a private Docker engine")


class PrivateEngine:
    """A dockerd of the test rig's own; ``create()`` starts one, ``remove()`` leaves no trace."""

    def __init__(self, root: Path, block: int) -> None:
        self.root = root
        self.block = block
        self.bridge = f"{BRIDGE_PREFIX}{block}"
        self._process: subprocess.Popen[bytes] | None = None
        # Bridges of the networks made in this engine (``br-<id>``): they outlive a stopped engine.
        self._network_bridges: set[str] = set()

    @classmethod
    def create(cls, timeout: float = 120.0) -> PrivateEngine:
        block = _claim_block()
        try:
            engine = cls(Path(tempfile.mkdtemp(prefix="v6pe-", dir="/tmp")), block)
        except BaseException:
            _as_root(["ip", "link", "delete", f"{BRIDGE_PREFIX}{block}"], check=False)
            raise
        try:
            (engine.root / "daemon.json").write_text("{}\n")
            engine.start(timeout)
        except BaseException:
            engine.remove()
            raise
        return engine

    # --- where things are ---------------------------------------------------------------
    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def url(self) -> str:
        """For ``DOCKER_HOST`` and ``docker.DockerClient(base_url=...)``."""
        return f"unix://{self.socket}"

    @property
    def log_file(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def pid(self) -> int | None:
        """The running engine's pid (its own pid file), None when it is stopped."""
        if not self.running:
            return None
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int((self.root / "docker.pid").read_text().strip())
        return None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def arguments(self) -> list[str]:
        return [
            "dockerd",
            f"--config-file={self.root / 'daemon.json'}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'docker.pid'}",
            f"--host={self.url}",
            f"--bridge={self.bridge}",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-forward=false",
        ]

    def client(self, timeout: float = 60) -> docker.DockerClient:
        """A new client of this engine (the caller closes it)."""
        return docker.DockerClient(base_url=self.url, timeout=timeout)

    # --- life cycle ---------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        """Start dockerd on this engine's data root and wait until its socket answers."""
        if self.running:
            raise RuntimeError("the private engine is already running")
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [*_root_prefix(), *self.arguments()],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C in the terminal does not reach it; remove() stops it,
                # after the node processes that use it.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._process.poll() is not None:
                raise RuntimeError(f"private dockerd exited with {self._process.returncode}:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"private dockerd did not answer within {timeout:g} s:\n{self._log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 120.0) -> None:
        """SIGTERM to this engine's pid, then wait until it has exited.

        The engine first stops the containers it runs (SIGTERM, SIGKILL after their stop timeout).
        """
        if not self.running:
            return
        assert self._process is not None
        with contextlib.suppress(Exception):  # an engine that does not answer has made none since
            self._remember_network_bridges()
        pid = self.pid
        if os.geteuid() == 0:
            # Its own child: its pid file and our process handle name the same process.
            assert pid in (None, self._process.pid), f"pid file {pid} is not our dockerd {self._process.pid}"
            self._process.send_signal(signal.SIGTERM)
        elif pid is not None:
            _as_root(["kill", "-TERM", str(pid)])
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"private dockerd (pid {pid}) did not stop within {timeout:g} s:\n{self._log_tail()}") from None

    def restart(self) -> None:
        """The fault the tests inject: the engine stops (stopping its containers) and comes back on the same data root."""
        self.stop()
        self.start()

    def load_images(self, source: docker.DockerClient, names: Iterable[str]) -> None:
        """Copy images from ``source`` (the machine engine) into this engine: save streamed into load."""
        client = self.client(timeout=300)
        try:
            for name in names:
                client.images.load(source.images.get(name).save(named=name))
                client.images.get(name)  # raises if it did not arrive under that name
        finally:
            client.close()

    def remove(self) -> None:
        """Everything in the engine, the engine, its folders (data, exec root, socket) and bridges."""
        if self.running:
            with contextlib.suppress(Exception):  # removal goes on with what is left
                self._remove_contents()
        self.stop()
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mount_point = line.split()[4]
            if mount_point == str(self.root) or mount_point.startswith(f"{self.root}/"):
                _as_root(["umount", "-l", mount_point], check=False)
        for link in self._links():
            _as_root(["ip", "link", "delete", link], check=False)
        _as_root(["rm", "-rf", "--one-file-system", str(self.root)], check=False)

    def _remove_contents(self) -> None:
        self._remember_network_bridges()
        client = self.client()
        try:
            api = client.api
            for container in api.containers(all=True):
                with contextlib.suppress(docker.errors.NotFound):
                    api.remove_container(container["Id"], force=True, v=True)
            for network in api.networks():
                if network["Name"] in PREDEFINED_NETWORKS:
                    continue
                with contextlib.suppress(docker.errors.NotFound):
                    api.remove_network(network["Id"])
            for volume in api.volumes().get("Volumes") or []:
                with contextlib.suppress(docker.errors.NotFound):
                    api.remove_volume(volume["Name"], force=True)
        finally:
            client.close()

    def __enter__(self) -> PrivateEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # --- helpers ------------------------------------------------------------------------
    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            client = docker.DockerClient(base_url=self.url, timeout=5)
        except Exception:  # noqa: BLE001 - creating the client asks the engine its version
            return False
        try:
            return bool(client.ping())
        except Exception:  # noqa: BLE001 - anything short of an answer means "not yet"
            return False
        finally:
            client.close()

    def _remember_network_bridges(self) -> None:
        client = self.client(timeout=10)
        try:
            for network in client.api.networks():
                if network["Name"] not in PREDEFINED_NETWORKS and network.get("Driver") == "bridge":
                    self._network_bridges.add(f"br-{network['Id'][:12]}")
        finally:
            client.close()

    def _links(self) -> list[str]:
        """Our bridge and the bridges of the networks made in this engine that still exist."""
        return sorted(name for name in {self.bridge, *self._network_bridges} if Path(f"/sys/class/net/{name}").exists())

    def _log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def running_private_engine(images: Iterable[str] = (), source: docker.DockerClient | None = None) -> Iterator[PrivateEngine]:
    """A started private engine with ``images`` loaded from ``source``; removed on exit."""
    engine = PrivateEngine.create()
    with engine:
        if images:
            assert source is not None, "images are loaded from a source engine"
            engine.load_images(source, images)
        yield engine
