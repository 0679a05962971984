"""Encrypted collaborations with the real server, the real vantage6 client and our node."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import encryption
from tests.rig.paths import image
from v6node.adapters.crypto.rsa_cryptor import public_key_of

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.server]


def test_encrypted_task_round_trip_with_the_real_client(make_federation, start_node, researcher_for, org_keys, admin):
    federation = make_federation(encrypted=True)
    org = federation.organization_ids[0]
    node = start_node(federation.nodes[0], **encryption(org_keys[0]))
    # The node uploaded its organization's public key at start.
    stored = admin.get(f"/organization/{org}")["public_key"]
    assert base64.b64decode(stored) == base64.b64decode(public_key_of(org_keys[0].read_bytes()))

    user = researcher_for(federation, private_key=str(org_keys[0]))
    task_input = {"method": "echo", "kwargs": {"secret": "patient data stays home"}}
    task = user.create_task(federation.collaboration_id, [org], image("echo-algo"), task_input)
    # What the server stores is ciphertext, not the input.
    (stored_run,) = admin.runs_of_task(task["id"])
    assert "patient data" not in stored_run["input"] and stored_run["input"].count("$") == 2
    (result,) = user.wait_for_results(task["id"])
    assert json.loads(result["result"]) == {"echo": task_input}
    (run,) = user.runs(task["id"])
    assert run["status"] == "completed"
    raw = admin.get("/result", task_id=task["id"])["data"][0]["result"]
    assert raw.count("$") == 2 and "patient data" not in raw
    assert node.running


def test_input_encrypted_for_another_key_fails_with_a_clear_log(make_federation, start_node, researcher_for, org_keys, real_server):
    from tests.rig.server import AdminApi

    federation = make_federation(encrypted=True)
    org = federation.organization_ids[0]
    start_node(federation.nodes[0], **encryption(org_keys[0]))
    # A member replaces the organization's public key after the node started: the client
    # now encrypts for a key the node does not hold.
    member = AdminApi(real_server, federation.user.username, federation.user.password)
    member.patch(f"/organization/{org}", {"public_key": public_key_of(org_keys[1].read_bytes())})
    member.close()
    user = researcher_for(federation, private_key=str(org_keys[1]))
    task = user.create_task(federation.collaboration_id, [org], image("echo-algo"), {"method": "echo"})
    user.wait_for_results(task["id"])
    (run,) = user.runs(task["id"])
    assert run["status"] == "failed"
    assert "could not be decrypted for this organization" in run["log"]


def test_a_node_whose_config_disagrees_with_the_collaboration_refuses_to_start(make_federation, start_node, org_keys):
    federation = make_federation(encrypted=True)
    node = start_node(federation.nodes[0], wait=False)  # encryption.enabled: false
    assert node.wait_exit(timeout=90) == 2
    assert "is encrypted on the server" in node.output and "Set encryption.enabled to true" in node.output


def test_create_private_key_writes_the_key_updates_the_config_and_uploads(make_federation, real_server, admin, tmp_path):
    from tests.rig.node_process import node_config

    federation = make_federation(encrypted=True)
    node = federation.nodes[0]
    config_file = tmp_path / "keyed.yaml"
    config_file.write_text(yaml.safe_dump(node_config(real_server, node, tmp_path)))
    cli = [str(Path(sys.executable).with_name("v6node")), "create-private-key", "-c", str(config_file), "--bits", "2048"]
    first = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    config = yaml.safe_load(config_file.read_text())
    key_file = Path(config["encryption"]["private_key"])
    assert config["encryption"]["enabled"] is True
    assert key_file.is_file() and (key_file.stat().st_mode & 0o777) == 0o600
    assert key_file.name == f"privkey_{federation_org_name(admin, node.organization_id)}.pem"
    stored = admin.get(f"/organization/{node.organization_id}")["public_key"]
    assert base64.b64decode(stored) == base64.b64decode(public_key_of(key_file.read_bytes()))
    again = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_create_private_key_refuses_for_an_unencrypted_collaboration(make_federation, real_server, tmp_path):
    from tests.rig.node_process import node_config

    federation = make_federation(encrypted=False)
    config_file = tmp_path / "plain.yaml"
    config_file.write_text(yaml.safe_dump(node_config(real_server, federation.nodes[0], tmp_path)))
    cli = [str(Path(sys.executable).with_name("v6node")), "create-private-key", "-c", str(config_file)]
    result = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "is not encrypted" in result.stderr
    assert not list(tmp_path.rglob("privkey_*.pem"))


def federation_org_name(admin, organization_id: int) -> str:
    return admin.get(f"/organization/{organization_id}")["name"]
