"""`v6node logs` and `v6node audit verify|show` on files a node wrote."""
import asyncio
import json
import uuid

import pytest
from click.testing import CliRunner

from v6node.adapters.filesystem.json_lines_audit_log import in_data_folder
from v6node.app.cli import main


@pytest.fixture
def station(tmp_path):
    data = tmp_path / "data"
    config = tmp_path / "alpha.yaml"
    config.write_text(f"api_key: k\nserver_url: http://s\ndirectories: {{data: {data}, log: {tmp_path}/log}}\n")
    return config, data, tmp_path / "log"


def write_audit(data, entries):
    audit = in_data_folder(str(data))
    for entry in entries:
        asyncio.run(audit.append(entry))
    return audit.path


ENTRIES = [
    {"at": "2026-12-05T10:00:00+00:00", "event": "decided", "run_id": 7, "task_id": 3, "allowed": True, "reason": "no policy"},
    {"at": "2026-12-05T10:00:01+00:00", "event": "started", "run_id": 7, "task_id": 3, "container_id": "abc"},
    {"at": "2026-12-05T11:00:00+00:00", "event": "finished", "run_id": 7, "task_id": 3, "status": "completed"},
    {"at": "2026-12-05T12:00:00+00:00", "event": "decided", "run_id": 8, "task_id": 4, "allowed": False, "reason": "image not allowed"},
]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_audit_verify_says_how_many_entries_hold(station):
    config, data, _ = station
    write_audit(data, ENTRIES)
    result = invoke("audit", "verify", "-c", config)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip().endswith("audit.jsonl: 4 entries, the chain holds")


def test_audit_verify_names_an_edited_line(station):
    config, data, _ = station
    path = write_audit(data, ENTRIES)
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"abc"', '"abd"')
    path.write_text("\n".join(lines) + "\n")
    result = invoke("audit", "verify", "-c", config)
    assert result.exit_code == 1
    assert "broken at line 2" in result.stderr


def test_audit_verify_notices_deleted_last_lines(station):
    config, data, _ = station
    path = write_audit(data, ENTRIES)
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:3]))
    result = invoke("audit", "verify", "-c", config)
    assert result.exit_code == 1
    assert "broken at line 4" in result.stderr and "deleted" in result.stderr


def test_audit_show_filters_by_run_and_time(station):
    config, data, _ = station
    write_audit(data, ENTRIES)
    by_run = invoke("audit", "show", "-c", config, "--run", 8).stdout.splitlines()
    assert len(by_run) == 1 and "decided  run 8 task 4" in by_run[0] and 'reason="image not allowed"' in by_run[0]
    since = invoke("audit", "show", "-c", config, "--since", "2026-12-05T10:30:00").stdout.splitlines()
    assert [line.split()[0] for line in since] == ["3", "4"]
    raw = invoke("audit", "show", "-c", config, "--json").stdout.splitlines()
    assert [json.loads(line)["seq"] for line in raw] == [1, 2, 3, 4]
    assert "hash" not in by_run[0]


def test_audit_show_names_a_line_that_is_not_an_entry(station):
    config, data, _ = station
    path = write_audit(data, ENTRIES)
    with path.open("a") as f:
        f.write("garbage\n")
    result = invoke("audit", "show", "-c", config)
    assert result.exit_code == 1
    assert "line 5 of the audit log" in result.stderr


def test_an_empty_audit_log_holds(station):
    config, _, _ = station
    result = invoke("audit", "verify", "-c", config)
    assert result.exit_code == 0 and "0 entries" in result.stdout


def test_logs_prints_a_run_log_with_the_algorithms_control_characters_shown(station):
    config, _, log = station
    (log / "runs").mkdir(parents=True)
    (log / "runs" / "12.log").write_text("node: run 12 started\n\x1b]0;pwned\x07hello\tworld\n")
    result = invoke("logs", "-c", config, 12)
    assert result.exit_code == 0
    assert result.stdout == "node: run 12 started\n\\x1b]0;pwned\\x07hello\tworld\n"
    assert invoke("logs", "-c", config, 12, "--raw").stdout.startswith("node: run 12 started\n\x1b]0;")


def test_logs_of_an_unknown_run_says_where_it_looked(station):
    config, _, log = station
    result = invoke("logs", "-c", config, 99)
    assert result.exit_code == 1
    assert f"no log for run 99 at {log}/runs/99.log" in result.stderr
    assert "run_log_retention_days (30)" in result.stderr


def test_audit_of_the_node_in_its_container_needs_its_data_volume(tmp_path):
    config = tmp_path / f"never-docker-{uuid.uuid4().hex[:8]}.yaml"
    config.write_text(f"api_key: k\nserver_url: http://s\ndirectories: {{data: {tmp_path}/data}}\n")
    result = invoke("audit", "verify", "-c", config, "--docker")
    assert result.exit_code == 1
    assert f"has no data volume vantage6-{config.stem}-user-vol: it never ran in its container" in result.stderr
