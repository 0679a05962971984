"""Task folders on the node's disk: ``<tasks dir>/task-<run id>/{input,output,token}``."""
from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

from v6node.domain.containers import task_folder_name
from v6node.domain.errors import OutputRejected
from v6node.ports.task_workspace import OUTPUT_CHUNK, TaskWorkspace

_FOLDER = re.compile(r"^task-(\d{9,})$")
_OUTPUT = "output"
# Never follow a link, never wait for a writer (a FIFO), never take a terminal.
_OPEN_OUTPUT = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


class LocalTaskWorkspace(TaskWorkspace):
    """Each run's folder is the only part of the disk its algorithm container gets to see.

    The folder is writable for any user (the algorithm may run as any user), so anything in
    it may have been replaced by the algorithm. The output is therefore opened relative to a
    descriptor of the folder, without following links and without blocking, and used only
    when ``fstat`` shows a regular file with no other name; it is read in bounded pieces.
    """

    def __init__(self, tasks_dir: str) -> None:
        self._root = Path(tasks_dir)

    def tasks_dir(self) -> str:
        return str(self._root)

    async def write_marker(self, name: str, data: bytes) -> str:
        return await asyncio.to_thread(self._write_marker, name, data)

    def _write_marker(self, name: str, data: bytes) -> str:
        if "/" in name or name.startswith("task-"):
            raise ValueError(f"not a marker name: {name!r}")
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self._root / name).write_bytes(data)
        return str(self._root / name)

    async def remove_marker(self, name: str) -> None:
        await asyncio.to_thread((self._root / name).unlink, True)

    def folder(self, run_id: int) -> Path:
        return self._root / task_folder_name(run_id)

    async def prepare(self, run_id: int, input_data: bytes, token: str) -> None:
        await asyncio.to_thread(self._prepare, run_id, input_data, token)

    def _prepare(self, run_id: int, input_data: bytes, token: str) -> None:
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder = self.folder(run_id)
        # Whatever an earlier attempt (or its algorithm) left here is not written through.
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        # The algorithm may run as any user; it must be able to write its output.
        os.chmod(folder, 0o777)
        (folder / "input").write_bytes(input_data)
        (folder / "token").write_text(token, encoding="ascii")
        output = folder / _OUTPUT
        output.write_bytes(b"")
        os.chmod(output, 0o666)

    async def add_file(self, run_id: int, name: str, data: bytes) -> None:
        await asyncio.to_thread(self._add_file, run_id, name, data)

    def _add_file(self, run_id: int, name: str, data: bytes) -> None:
        path = self._inside(run_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    async def copy_in(self, run_id: int, source: str, name: str) -> None:
        await asyncio.to_thread(self._copy_in, run_id, source, name)

    def _copy_in(self, run_id: int, source: str, name: str) -> None:
        target = self._inside(run_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(source):
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, target)

    def _inside(self, run_id: int, name: str) -> Path:
        folder = self.folder(run_id).resolve()
        path = (folder / name).resolve()
        if folder not in path.parents:
            raise ValueError(f"{name!r} is not inside the task folder of run {run_id}")
        return path

    # --- the output: hostile input -----------------------------------------------------------
    async def output_size(self, run_id: int, limit: int) -> int:
        return await asyncio.to_thread(self._output_size, run_id, limit)

    def _output_size(self, run_id: int, limit: int) -> int:
        with self._open_output(run_id, limit) as (_, size):
            return size

    async def output_chunks(
        self, run_id: int, limit: int, chunk_size: int = OUTPUT_CHUNK
    ) -> AsyncIterator[bytes]:
        opened = self._open_output(run_id, limit)
        fd, _ = await asyncio.to_thread(opened.__enter__)
        try:
            offset = 0
            while True:
                # One more byte than allowed is enough to notice a file that grew.
                want = min(chunk_size, limit + 1 - offset)
                chunk = await asyncio.to_thread(os.pread, fd, want, offset) if want > 0 else b""
                if not chunk:
                    return
                offset += len(chunk)
                if offset > limit:
                    raise OutputRejected(
                        f"the output file grew past the limit of {limit} bytes (max_output_size) while it was read"
                    )
                yield chunk
        finally:
            opened.__exit__(None, None, None)

    @contextmanager
    def _open_output(self, run_id: int, limit: int) -> Iterator[tuple[int, int]]:
        """A descriptor of the checked output file and its size."""
        folder_fd = os.open(self.folder(run_id), _OPEN_FOLDER)
        try:
            try:
                fd = os.open(_OUTPUT, _OPEN_OUTPUT, dir_fd=folder_fd)
            except FileNotFoundError:
                raise
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise OutputRejected(
                        "the output file was replaced by a symbolic link; the node does not follow links "
                        "an algorithm made, so nothing of it was read"
                    ) from None
                raise OutputRejected(
                    f"the output file cannot be opened ({exc.strerror or exc}); "
                    + self._what_is_there(folder_fd)
                ) from None
        finally:
            os.close(folder_fd)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OutputRejected(f"the output is {_kind(info.st_mode)}, not a regular file; nothing of it was read")
            if info.st_nlink != 1:
                raise OutputRejected(
                    f"the output file has {info.st_nlink} names (hard links), so it may be another file; "
                    "nothing of it was read"
                )
            if info.st_size > limit:
                raise OutputRejected(
                    f"the output file is {info.st_size} bytes, more than the limit of {limit} (max_output_size)"
                )
            yield fd, info.st_size
        finally:
            os.close(fd)

    @staticmethod
    def _what_is_there(folder_fd: int) -> str:
        try:
            return f"it is {_kind(os.lstat(_OUTPUT, dir_fd=folder_fd).st_mode)}"
        except OSError:
            return "it cannot be inspected"

    async def remove(self, run_id: int) -> None:
        await asyncio.to_thread(shutil.rmtree, self.folder(run_id), True)

    async def run_ids(self) -> list[int]:
        return await asyncio.to_thread(self._run_ids)

    def _run_ids(self) -> list[int]:
        if not self._root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self._root.iterdir() if (m := _FOLDER.match(p.name)))

    async def runs_with_output(self) -> list[int]:
        return await asyncio.to_thread(self._runs_with_output)

    def _runs_with_output(self) -> list[int]:
        found = []
        for run_id in self._run_ids():
            try:
                info = os.lstat(self.folder(run_id) / _OUTPUT)
            except OSError:
                continue
            if info.st_size > 0 or not stat.S_ISREG(info.st_mode):
                found.append(run_id)
        return found
