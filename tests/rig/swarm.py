"""A three-host Docker Swarm for the tests: three extra dockerd, each in a network namespace of its own.

The machine's engine (pid in /var/run/docker.pid) and its namespace are never touched; what
the rig makes, it removes. Measured on this kind of machine (Debian 12, Docker Engine
20.10.24, kernel 6.18 with cgroup v1, VXLAN and br_netfilter built in, no IPVS):

- ``ip netns exec`` remounts /sys for the namespace and dockerd then stops with "Devices
  cgroup isn't mounted"; ``nsenter --net=/run/netns/<ns>`` enters only the network namespace
  and dockerd starts (0.4 s for three). ``unshare --uts`` first gives each its own host name,
  which Swarm reports as the node's host name (the spread of runs is shown by it).
- Inside its own namespace each dockerd has its own ``docker0``, iptables rules, ip_forward
  and ``docker_gwbridge``, so it runs with the engine's defaults (iptables on): nothing it does
  reaches the host's tables (checked by the tests with ``iptables-save`` before and after).
- Topology: a "switch" namespace holds a bridge; a veth pair joins each daemon's namespace
  (10.<n>.0.11-13) and one joins the host namespace (10.<n>.0.1/24 on ``v6sw<n>``). Traffic
  between the daemons (Swarm's 2377/7946 and VXLAN 4789) is bridged inside the switch
  namespace, never forwarded by the host, whose FORWARD policy is DROP. The host reaches the
  daemons (and they it) directly on its veth: INPUT/OUTPUT, no host rule involved.
- Each daemon's containers live under a cgroup parent of its own (``/v6sw<n>-<host>``), so
  "the host dies" (``kill_host``) can SIGKILL exactly its dockerd, containerd, shims and
  container processes. Killing only dockerd leaves its containers running.
- Swarm: the manager's node goes ``down`` about 14 s after its worker's processes die; its
  task then stays ``running`` in the manager's view (Swarm orphans it only after 24 h).
- A registry (Debian's ``docker-registry``) listens on the host's end of the link
  (``10.<n>.0.1:5000``); every daemon has it in ``insecure-registries`` (plain http).
- A rig whose test process was killed outlives it (the daemons run in sessions of their
  own): the next rig removes it (``remove_stale_rigs``; which rig is whose, and alive:
  ``swarm_claims``).
- The host ``UNSHARING`` runs in a mount namespace of its own (``unshare --mount``, private
  propagation) with an empty tmpfs over the rig's ``unshared`` folder: a task folder there
  is on the node's host and the other two, not on it, as on a host without the shared
  storage (the node must refuse to start, naming it). Elsewhere it sees what the machine has.
- The kernel has no IPVS, so services use ``endpoint_mode: dnsrr`` (no virtual IP); the
  ingress network Swarm makes stays unused.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

import docker
import docker.errors
from attrs import define, field

from tests.rig.dockerd import _as_root, _taken_ipv4
from tests.rig.swarm_claims import PREFIX, Claim, blocks_in_use, remove_stale_staging, take_over_stale, try_claim

BLOCKS = range(150, 200)  # second octets tried for 10.<n>.0.0/24; the private engine tries 200+ first
HOSTS = ("m", "w1", "w2")  # the manager first
UNSHARING = "w2"  # the host without the "shared storage" under ``SwarmRig.unshared``
# The test images every host gets (``docker save`` from the machine's engine, ``load`` into each).
SWARM_IMAGES = ("echo-algo", "crash-algo", "sleep-algo")
REGISTRY_PORT = 5000
CGROUP_ROOT = Path("/sys/fs/cgroup")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from the environment


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _as_root(["ip", *args], check=check)


def _in_ns(ns: str, *args: str) -> None:
    _as_root(["nsenter", f"--net=/run/netns/{ns}", *args])


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (a rig's folder)."""
    marker, found = text.encode(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


@define
class SwarmHost:
    """One dockerd of the swarm, in its own network namespace."""

    name: str  # the host name Swarm shows, e.g. v6sw150-w1
    netns: str
    address: str
    root: Path
    process: subprocess.Popen[bytes] | None = None
    registry: str | None = None  # host:port of the rig's registry, which this daemon may use over plain http
    # A folder this daemon sees as an empty tmpfs of its own (its own mount namespace): a
    # host without the shared storage there. None: it sees the machine's file system as it is.
    unshared: Path | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    @property
    def cgroup_parent(self) -> str:
        return f"/{self.name}"

    def arguments(self) -> list[str]:
        if self.unshared is None:
            own = ["unshare", "--uts", "sh", "-c", 'hostname "$1" && shift && exec "$@"', "sh", self.name]
        else:
            own = [
                "unshare", "--uts", "--mount", "--propagation", "private", "sh", "-c",
                'hostname "$1" && mount -t tmpfs -o size=1m,mode=0755 v6sw-unshared "$2" && shift 2 && exec "$@"',
                "sh", self.name, str(self.unshared),
            ]
        return [
            *own,
            "nsenter", f"--net=/run/netns/{self.netns}",
            "dockerd",
            f"--config-file={self.root / 'daemon.json'}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'docker.pid'}",
            f"--host={self.url}",
            f"--cgroup-parent={self.cgroup_parent}",
        ]

    def client(self, timeout: float = 60) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=timeout)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        settings = {"insecure-registries": [self.registry]} if self.registry else {}
        (self.root / "daemon.json").write_text(json.dumps(settings) + "\n")
        with (self.root / "dockerd.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.arguments(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd {self.name} did not start:\n{self._log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM to this dockerd (it stops its containers first), then whatever is left is killed."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> list[int]:
        """The host dies: SIGKILL to its dockerd, containerd, shims and every container process."""
        pids = set(self._container_pids()) | set(_pids_mentioning(f"{self.root}/"))
        if self.process is not None:
            pids.add(self.process.pid)
        for pid in sorted(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
        return sorted(pids)

    def _container_pids(self) -> Iterator[int]:
        for procs in CGROUP_ROOT.glob(f"*{self.cgroup_parent}/**/cgroup.procs"):
            with contextlib.suppress(OSError):
                yield from (int(line) for line in procs.read_text().split())

    def remove_cgroups(self) -> None:
        for controller in CGROUP_ROOT.iterdir():
            top = controller / self.cgroup_parent.lstrip("/")
            if top.is_dir():
                for folder in sorted(top.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        folder.rmdir()

    def _answers(self) -> bool:
        if not (self.root / "docker.sock").exists():
            return False
        try:
            with contextlib.closing(self.client(timeout=5)) as client:
                return bool(client.ping())
        except Exception:  # noqa: BLE001 - anything short of an answer means "not yet"
            return False

    def _log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join((self.root / "dockerd.log").read_text(errors="replace").splitlines()[-lines:])
        return ""


def cannot_run() -> str | None:
    """Why this machine cannot run the rig (the tests are then skipped with it), or None.

    Tried for real, not guessed: root (or ``sudo -n``), the programs, a network namespace
    with a veth into it, and a VXLAN link (Swarm's overlay) inside it; what it makes, it removes.
    """
    tools = ("dockerd", "ip", "nsenter", "unshare", "iptables", "docker-registry")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"the swarm rig needs {', '.join(missing)} on PATH"
    if os.geteuid() != 0 and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0:
        return "the swarm rig needs root (or password-less sudo) for network namespaces and dockerd"
    if not CGROUP_ROOT.is_dir():
        return f"the swarm rig needs cgroups at {CGROUP_ROOT}"
    probe = f"{PREFIX}probe{os.getpid()}"
    try:
        for step in (
            ["netns", "add", probe],
            ["link", "add", f"{probe}a", "type", "veth", "peer", "name", "eth0", "netns", probe],
            ["-n", probe, "link", "add", "vx0", "type", "vxlan", "id", "42", "dstport", "4789", "dev", "eth0"],
        ):
            made = _ip(*step, check=False)
            if made.returncode != 0:
                return f"the swarm rig cannot run here: 'ip {' '.join(step)}' failed: {made.stderr.strip()}"
    finally:
        _ip("link", "delete", f"{probe}a", check=False)
        _ip("netns", "delete", probe, check=False)
    return None


def remove_stale_rigs() -> list[str]:
    """Remove what rigs of test runs that were killed before their teardown left: their
    daemons (which outlive the test process: they run in sessions of their own), registry,
    cgroups, namespaces, links and folders. A rig whose test process still runs is left
    alone (``swarm_claims``). Returns the prefixes removed."""
    remove_stale_staging()
    namespaces = _ip("netns", "list", check=False).stdout.split()
    removed = []
    for block in sorted(blocks_in_use(namespaces)):
        ours = [ns for ns in namespaces if ns.startswith(f"{PREFIX}{block}-")]

        def has_processes() -> bool:
            return any(_ip("netns", "pids", ns, check=False).stdout.strip() for ns in ours)  # noqa: B023

        claim = take_over_stale(block, has_processes)
        if claim is None:
            continue
        rig = SwarmRig(claim)
        rig.hosts = [
            SwarmHost(f"{rig.prefix}-{short}", f"{rig.prefix}-{short}", "", claim.root / short) for short in HOSTS
        ]
        rig.remove()
        removed.append(rig.prefix)
    return removed


def _claim_block() -> Claim:
    """A free 10.<n>.0.0/24: its folder claimed (``swarm_claims``), then the host's veth
    ``v6sw<n>`` made (a block whose names a dead rig left is skipped: the next
    ``remove_stale_rigs`` removes them)."""
    import ipaddress

    taken = _taken_ipv4()
    namespaces = _ip("netns", "list", check=False).stdout.split()
    for n in BLOCKS:
        block = ipaddress.ip_network(f"10.{n}.0.0/16")
        if any(block.overlaps(net) for net in taken) or any(ns.startswith(f"{PREFIX}{n}-") for ns in namespaces):
            continue
        claim = try_claim(n)
        if claim is None:
            continue
        made = _ip("link", "add", f"{PREFIX}{n}", "type", "veth", "peer", "name", f"{PREFIX}{n}-p", check=False)
        if made.returncode == 0:
            return claim
        claim.release()
        if "File exists" not in made.stderr:
            raise RuntimeError(f"cannot create a veth pair: {made.stderr.strip()}")
    raise RuntimeError("no free 10.x.0.0/16 block for the swarm rig")


@define
class SwarmRig:
    """Three dockerd in network namespaces of their own, joined into one swarm (``create``)."""

    claim: Claim
    hosts: list[SwarmHost] = field(factory=list)
    registry_process: subprocess.Popen[bytes] | None = None

    @property
    def block(self) -> int:
        return self.claim.block

    @property
    def root(self) -> Path:
        return self.claim.root

    @property
    def registry(self) -> str:
        """host:port of the rig's registry (Debian's docker-registry) on the rig's link."""
        return f"{self.host_address}:{REGISTRY_PORT}"

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.block}"

    @property
    def switch(self) -> str:
        return f"{self.prefix}-s"

    @property
    def host_address(self) -> str:
        """The host namespace's address on the rig's link: where the node's proxy listens."""
        return f"10.{self.block}.0.1"

    @property
    def unshared(self) -> Path:
        """A folder every host but ``UNSHARING`` sees as the machine has it (shared storage);
        that one sees an empty folder there."""
        return self.root / "unshared"

    @property
    def unsharing_host(self) -> SwarmHost:
        return next(host for host in self.hosts if host.unshared is not None)

    @property
    def manager(self) -> SwarmHost:
        return self.hosts[0]

    @property
    def workers(self) -> list[SwarmHost]:
        return self.hosts[1:]

    @classmethod
    def create(cls, images: Iterable[str] = (), source: docker.DockerClient | None = None) -> SwarmRig:
        rig = cls(_claim_block())
        try:
            rig.unshared.mkdir()
            rig._link()
            rig._start_registry()
            for host in rig.hosts:
                host.start()
            rig._form_swarm()
            if images:
                assert source is not None
                rig.load_images(source, images)
        except BaseException:
            rig.remove()
            raise
        return rig

    def _link(self) -> None:
        """The switch namespace with its bridge, the host's leg and one leg per daemon namespace."""
        p, n = self.prefix, self.block
        _ip("netns", "add", self.switch)
        _in_ns(self.switch, "ip", "link", "add", "br0", "type", "bridge")
        _in_ns(self.switch, "ip", "link", "set", "br0", "up")
        _ip("link", "set", f"{p}-p", "netns", self.switch)
        _in_ns(self.switch, "ip", "link", "set", f"{p}-p", "master", "br0", "up")
        _ip("addr", "add", f"{self.host_address}/24", "dev", p)
        _ip("link", "set", p, "up")
        for i, short in enumerate(HOSTS):
            ns = f"{p}-{short}"
            host = SwarmHost(
                name=ns, netns=ns, address=f"10.{n}.0.{11 + i}", root=self.root / short, registry=self.registry,
                unshared=self.unshared if short == UNSHARING else None,
            )
            self.hosts.append(host)
            _ip("netns", "add", ns)
            _in_ns(ns, "ip", "link", "set", "lo", "up")
            _ip("link", "add", f"{p}-{short}", "netns", ns, "type", "veth", "peer", "name", f"port-{short}", "netns", self.switch)
            _in_ns(ns, "ip", "link", "set", f"{p}-{short}", "name", "eth0")
            _in_ns(ns, "ip", "addr", "add", f"{host.address}/24", "dev", "eth0")
            _in_ns(ns, "ip", "link", "set", "eth0", "up")
            _in_ns(self.switch, "ip", "link", "set", f"port-{short}", "master", "br0", "up")

    def _start_registry(self, timeout: float = 30.0) -> None:
        """A registry for the hosts to pull from, listening on the host's end of the rig's link."""
        folder = self.root / "registry"
        folder.mkdir()
        config = folder / "config.yml"
        config.write_text(json.dumps({
            "version": 0.1, "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(folder / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.registry},
        }))
        with (folder / "registry.log").open("ab") as log:
            self.registry_process = subprocess.Popen(
                ["docker-registry", "serve", str(config)], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                with _DIRECT.open(f"http://{self.registry}/v2/", timeout=5) as answer:
                    if answer.status == 200:
                        return
            if self.registry_process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the rig's registry did not start: {(folder / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def push(self, host: SwarmHost, name: str) -> str:
        """``name`` (an image on ``host``) pushed to the rig's registry; returns its name there."""
        repository, _, tag = name.rpartition("/")[2].partition(":")
        target = f"{self.registry}/{repository}:{tag or 'latest'}"
        with contextlib.closing(host.client(timeout=300)) as client:
            client.images.get(name).tag(target)
            for line in client.api.push(target, stream=True, decode=True):
                if "error" in line:
                    raise RuntimeError(f"pushing {target}: {line['error']}")
        return target

    def _form_swarm(self) -> None:
        with contextlib.closing(self.manager.client()) as manager:
            manager.swarm.init(advertise_addr=self.manager.address, listen_addr=f"{self.manager.address}:2377")
            token = manager.swarm.attrs["JoinTokens"]["Worker"]
        for worker in self.workers:
            with contextlib.closing(worker.client()) as client:
                client.swarm.join(
                    remote_addrs=[f"{self.manager.address}:2377"], join_token=token,
                    advertise_addr=worker.address, listen_addr=f"{worker.address}:2377",
                )
        self.wait_until_ready(len(self.hosts))

    def node_states(self) -> dict[str, str]:
        """Host name -> the manager's view of its state (ready, down, ...)."""
        with contextlib.closing(self.manager.client()) as manager:
            return {n["Description"]["Hostname"]: n["Status"]["State"] for n in manager.api.nodes()}

    def wait_until_ready(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(state == "ready" for state in self.node_states().values()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the swarm has not {count} ready nodes: {self.node_states()}")
            time.sleep(0.2)

    def load_images(self, source: docker.DockerClient, names: Iterable[str]) -> None:
        """``docker save`` from the machine's engine streamed into ``load`` of every host."""
        names = list(names)
        for host in self.hosts:
            with contextlib.closing(host.client(timeout=300)) as client:
                for name in names:
                    client.images.load(source.images.get(name).save(named=name))

    def restart_host(self, host: SwarmHost) -> None:
        """A host that died comes back (same data root: it rejoins the swarm by itself)."""
        host.kill()
        host.start()
        self.wait_until_ready(len(self.hosts))

    def containers(self, label: str, running_only: bool = False) -> dict[str, list[str]]:
        """Host name -> names of its containers (any state, or running ones) carrying ``label``."""
        found = {}
        for host in self.hosts:
            if host.running:
                with contextlib.closing(host.client()) as client:
                    listed = client.api.containers(all=not running_only, filters={"label": label})
                    found[host.name] = sorted(c["Names"][0] for c in listed)
        return found

    def remove(self) -> None:
        """Daemons, their processes and cgroups, namespaces, links and folders."""
        for host in reversed(self.hosts):
            host.stop()
            host.remove_cgroups()
        if self.registry_process is not None:
            self.registry_process.kill()
            self.registry_process.wait(30)
        for pid in _pids_mentioning(f"{self.root}/registry/"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mount_point = line.split()[4]
            if mount_point.startswith(f"{self.root}/"):
                _as_root(["umount", "-l", mount_point], check=False)
        # The host's end first: deleting a namespace removes its links only later (asynchronously).
        _ip("link", "delete", self.prefix, check=False)
        for host in self.hosts:
            _ip("netns", "delete", host.netns, check=False)
        _ip("netns", "delete", self.switch, check=False)
        self.claim.release()  # the last step: the block is free for another rig from here on

    def leftovers(self) -> list[str]:
        """What of this rig is still on the machine (after ``remove``: nothing)."""
        left = [f"netns {ns}" for ns in _ip("netns", "list", check=False).stdout.split() if ns.startswith(f"{self.prefix}-")]
        left += [f"link {self.prefix}"] if _ip("link", "show", self.prefix, check=False).returncode == 0 else []
        left += [f"folder {self.root}"] if self.root.exists() else []
        left += [f"cgroup {path}" for path in CGROUP_ROOT.glob(f"*/{self.prefix}-*")]
        left += [f"process {pid}" for pid in _pids_mentioning(f"{self.root}/")]
        return left

    def __enter__(self) -> SwarmRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


@contextlib.contextmanager
def running_swarm(images: Iterable[str] = (), source: docker.DockerClient | None = None) -> Iterator[SwarmRig]:
    rig = SwarmRig.create(images, source)
    with rig:
        yield rig
