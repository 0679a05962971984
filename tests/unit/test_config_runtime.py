"""The ``runtime`` key: the local engine by default, or a Docker Swarm with its placement."""
import pytest

from v6node.domain.config import RuntimeConfig
from v6node.domain.errors import ConfigError
from tests.unit.test_config import write

from v6node.app.config import load_config

BASE = "api_key: k\nserver_url: https://s\n"


def load(tmp_path, text):
    return load_config(write(tmp_path, BASE + text), default_data_dir=str(tmp_path / "data"))


def test_the_local_engine_is_the_default(tmp_path):
    runtime = load(tmp_path, "").runtime
    assert runtime == RuntimeConfig() and runtime.kind == "docker" and not runtime.cluster


def test_a_swarm_with_placement_reservations_and_a_gpu(tmp_path):
    runtime = load(tmp_path, """\
runtime:
  kind: swarm
  constraints: ["node.labels.v6 == yes", "node.role != manager"]
  reserve_cpus: 1.5
  reserve_memory: 2g
  gpu: true
  proxy_address: 10.1.0.5
""").runtime
    assert runtime.cluster
    assert runtime.constraints == ("node.labels.v6 == yes", "node.role != manager")
    assert (runtime.reserve_cpus, runtime.reserve_memory, runtime.gpu) == (1.5, 2 * 1024**3, True)
    assert (runtime.gpu_resource, runtime.proxy_address) == ("NVIDIA-GPU", "10.1.0.5")


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        ("runtime: {kind: kubernetes}", "runtime.kind", "expected one of docker, swarm"),
        ("runtime: {kind: swarm, constraints: [gpu]}", "runtime.constraints[0]", "a Swarm constraint"),
        ("runtime: {kind: swarm, proxy_address: proxy.example}", "runtime.proxy_address", "an IP address"),
        ("runtime: {kind: swarm}\nproxy_check_image: null", "proxy_check_image", "busybox"),
        ("runtime: {kind: swarm}\nwhitelist: {domains: [example.org], ports: [443]}", "runtime", "one engine only"),
        ("runtime: {kind: swarm}\nvpn_subnet: 10.76.0.0/16", "runtime", "vpn_subnet"),
    ],
)
def test_what_a_swarm_cannot_have_is_refused_naming_the_key(tmp_path, text, key, says):
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, text + "\n")
    assert refused.value.key == key
    assert says in str(refused.value)
