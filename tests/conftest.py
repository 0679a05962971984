"""Shared fixtures: the real server of the test rig and fixtures created on it."""
from __future__ import annotations

import itertools
import signal
from pathlib import Path
from collections.abc import Iterator

import docker
import pytest

from tests.rig.egress import Outside
from tests.rig.server import AdminApi, Federation, RealServer, create_federation

_names = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C acts as at a terminal, in the suite and in every process it starts, also when
    the suite was started in the background of a shell without job control (``cmd &``):
    that makes SIGINT ignored, an ignored signal stays ignored in every child, and the tests
    that detach ``v6node attach`` with Ctrl-C would wait for nothing."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A plain client of the machine's Docker engine, to look at what the node made there."""
    client = docker.from_env()
    client.ping()
    yield client
    client.close()


@pytest.fixture
def outside(docker_client: docker.DockerClient) -> Iterator[Outside]:
    """The tests' stand-in for the internet (networks, web and SSH servers), removed afterwards."""
    made = Outside(docker_client)
    yield made
    made.close()


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """The real vantage6 4.15.2 server, one per test module.

    Not one per session: the server checks a node's API key against every node's bcrypt
    hash in turn (~0.2 s each), so node logins slow down as a server collects nodes.
    """
    server = RealServer(tmp_path_factory.mktemp("server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def admin(real_server: RealServer) -> Iterator[AdminApi]:
    api = AdminApi(real_server)
    yield api
    api.close()


@pytest.fixture
def make_federation(admin: AdminApi):
    """Factory: a fresh collaboration (own organizations, nodes and user) per call."""

    def make(n_orgs: int = 2, encrypted: bool = False) -> Federation:
        return create_federation(admin, f"f{next(_names)}", n_orgs=n_orgs, encrypted=encrypted)

    return make


@pytest.fixture
def federation(make_federation) -> Federation:
    return make_federation()


def pytest_sessionstart(session: pytest.Session) -> None:
    """The venv's editable install links each module; a module added since needs a re-install."""
    import v6node.domain

    tree = Path(next(iter(v6node.domain.__path__))).parent
    repo = Path(__file__).resolve().parents[1]
    missing = [
        str(path.relative_to(repo))
        for folder in ("domain", "ports", "app", "adapters")
        for path in (repo / folder).rglob("*.py")
        if tree != repo and not (tree / folder / path.relative_to(repo / folder)).exists()
    ]
    if missing:
        raise pytest.UsageError(
            f"the editable install in .venv predates {', '.join(missing[:5])}: run scripts/setup-rig "
            "(scripts/test does) to link the new modules"
        )


@pytest.fixture(scope="session")
def swarm_rig():
    """Three extra dockerd in network namespaces of their own, formed into a swarm, with the
    test images loaded into each (tests/rig/swarm.py); removed after the session, also when a
    test failed. Skipped, with the reason, on a machine that cannot run it."""
    import docker

    from tests.rig.images import ensure_images
    from tests.rig.paths import image
    from tests.rig.swarm import SWARM_IMAGES, cannot_run, remove_stale_rigs, running_swarm

    why = cannot_run()
    if why is not None:
        pytest.skip(why)
    remove_stale_rigs()  # of a test run that was killed before its teardown
    ensure_images(SWARM_IMAGES)
    source = docker.from_env()
    try:
        with running_swarm([image(name) for name in SWARM_IMAGES], source) as rig:
            yield rig
    finally:
        source.close()
    left = rig.leftovers()
    assert not left, f"the swarm rig left {left}"
