"""TaskWorkspace: the same suite against the memory adapter and the local folders; then
what a hostile algorithm can leave in its task folder, against the local adapter."""
from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from v6node.adapters.filesystem.local_task_workspace import LocalTaskWorkspace
from v6node.adapters.memory.workspace import MemoryTaskWorkspace
from v6node.domain.errors import OutputRejected
from v6node.ports.task_workspace import TaskWorkspace

LIMIT = 1024


@pytest.fixture(params=["memory", "local"])
def workspace(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[TaskWorkspace, Callable[[int, bytes], None]]:
    """The adapter, and how an algorithm writes its output there."""
    if request.param == "memory":
        memory = MemoryTaskWorkspace()
        return memory, memory.write_output
    local = LocalTaskWorkspace(str(tmp_path / "tasks"))
    return local, lambda run_id, data: (local.folder(run_id) / "output").write_bytes(data)


async def chunks_of(workspace: TaskWorkspace, run_id: int, limit: int = LIMIT, chunk_size: int = 4) -> list[bytes]:
    return [chunk async for chunk in workspace.output_chunks(run_id, limit, chunk_size)]


def test_the_adapters_keep_to_the_port(workspace) -> None:
    assert isinstance(workspace[0], TaskWorkspace)


async def test_a_prepared_folder_has_an_empty_output_and_no_output_to_report(workspace) -> None:
    ws, _ = workspace
    await ws.prepare(3, b'{"method": "x"}', "token")

    assert await ws.run_ids() == [3]
    assert await ws.runs_with_output() == []
    assert await ws.output_size(3, LIMIT) == 0
    assert await chunks_of(ws, 3) == []


async def test_the_output_is_read_back_in_pieces_and_again_on_every_call(workspace) -> None:
    ws, write = workspace
    await ws.prepare(4, b"{}", "token")
    write(4, b"0123456789")

    assert await ws.output_size(4, LIMIT) == 10
    assert await chunks_of(ws, 4) == [b"0123", b"4567", b"89"]
    assert await chunks_of(ws, 4) == [b"0123", b"4567", b"89"]
    assert await ws.runs_with_output() == [4]


async def test_an_output_over_the_limit_is_rejected_with_its_size(workspace) -> None:
    ws, write = workspace
    await ws.prepare(5, b"{}", "token")
    write(5, b"x" * 11)

    with pytest.raises(OutputRejected, match="11 bytes, more than the limit of 10"):
        await ws.output_size(5, 10)
    with pytest.raises(OutputRejected):
        await chunks_of(ws, 5, limit=10)


async def test_a_missing_folder_has_no_output_and_removing_it_twice_is_fine(workspace) -> None:
    ws, _ = workspace
    with pytest.raises(FileNotFoundError):
        await ws.output_size(6, LIMIT)
    await ws.prepare(6, b"{}", "token")
    await ws.remove(6)
    await ws.remove(6)
    assert await ws.run_ids() == []


# --- what a hostile algorithm leaves behind (the local folders) ------------------------------------
@pytest.fixture
def local(tmp_path: Path) -> LocalTaskWorkspace:
    return LocalTaskWorkspace(str(tmp_path / "tasks"))


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "private_key.pem"
    path.write_text("-----BEGIN PRIVATE KEY----- the node's secret")
    return path


def output_of(local: LocalTaskWorkspace, run_id: int) -> Path:
    return local.folder(run_id) / "output"


def replace_output(local: LocalTaskWorkspace, run_id: int, make: Callable[[Path], object]) -> None:
    path = output_of(local, run_id)
    path.unlink()
    make(path)


async def rejected(local: LocalTaskWorkspace, run_id: int) -> str:
    """Both reads refuse; the reason, which must hold nothing of what the output points to."""
    with pytest.raises(OutputRejected) as by_size:
        await asyncio.wait_for(local.output_size(run_id, LIMIT), 10)
    with pytest.raises(OutputRejected):
        await asyncio.wait_for(chunks_of(local, run_id), 10)
    return str(by_size.value)


async def test_a_symlink_to_a_host_file_is_never_followed(local, secret) -> None:
    await local.prepare(7, b"{}", "token")
    replace_output(local, 7, lambda path: path.symlink_to(secret))

    reason = await rejected(local, 7)

    assert "symbolic link" in reason and "secret" not in reason
    assert await local.runs_with_output() == [7]  # so reconciliation reports it (as rejected)


@pytest.mark.parametrize("target", ["/dev/zero", "/proc/self/environ", "/etc/shadow"])
async def test_symlinks_to_devices_and_process_files_are_never_followed(local, target: str) -> None:
    await local.prepare(8, b"{}", "token")
    replace_output(local, 8, lambda path: path.symlink_to(target))

    assert "symbolic link" in await rejected(local, 8)


async def test_a_named_pipe_is_refused_at_once_instead_of_blocking(local) -> None:
    await local.prepare(9, b"{}", "token")
    replace_output(local, 9, os.mkfifo)

    assert "named pipe" in await rejected(local, 9)  # within wait_for's 10 s, not forever


async def test_a_directory_is_refused(local) -> None:
    await local.prepare(10, b"{}", "token")
    replace_output(local, 10, lambda path: path.mkdir())

    assert "a directory" in await rejected(local, 10)


async def test_a_hard_link_to_another_file_is_refused(local) -> None:
    await local.prepare(11, b"{}", "the container token")
    replace_output(local, 11, lambda path: os.link(local.folder(11) / "token", path))

    reason = await rejected(local, 11)

    assert "2 names" in reason and "container token" not in reason


async def test_a_unix_socket_is_refused(local) -> None:
    await local.prepare(12, b"{}", "token")
    listener = socket.socket(socket.AF_UNIX)
    try:
        replace_output(local, 12, lambda path: listener.bind(str(path)))
        assert "socket" in await rejected(local, 12)
    finally:
        listener.close()


async def test_prepare_starts_a_fresh_folder_and_never_writes_through_links(local, secret) -> None:
    await local.prepare(13, b"{}", "token")
    (local.folder(13) / "input").unlink()
    (local.folder(13) / "input").symlink_to(secret)

    await local.prepare(13, b'{"fresh": 1}', "token")

    assert secret.read_text().endswith("the node's secret")
    assert (local.folder(13) / "input").read_bytes() == b'{"fresh": 1}'
    assert not (local.folder(13) / "input").is_symlink()
