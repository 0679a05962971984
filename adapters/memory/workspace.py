"""Task folders kept in memory."""
from __future__ import annotations

from collections.abc import AsyncIterator

from attrs import define, field

from v6node.domain.errors import OutputRejected
from v6node.ports.task_workspace import OUTPUT_CHUNK, TaskWorkspace


@define
class TaskFiles:
    input: bytes
    token: str
    output: bytes | None = b""
    # Set to what an algorithm left instead of a plain file ("a symbolic link", ...).
    unsafe_output: str | None = None
    files: dict[str, bytes] = field(factory=dict)
    copies: dict[str, str] = field(factory=dict)  # name in the folder -> host source


class MemoryTaskWorkspace(TaskWorkspace):
    def __init__(self) -> None:
        self.folders: dict[int, TaskFiles] = {}
        self.removed: list[int] = []
        self.markers: dict[str, bytes] = {}

    def tasks_dir(self) -> str:
        return "/memory/tasks"

    async def write_marker(self, name: str, data: bytes) -> str:
        self.markers[name] = data
        return f"{self.tasks_dir()}/{name}"

    async def remove_marker(self, name: str) -> None:
        self.markers.pop(name, None)

    async def prepare(self, run_id: int, input_data: bytes, token: str) -> None:
        self.folders[run_id] = TaskFiles(input=input_data, token=token)

    async def add_file(self, run_id: int, name: str, data: bytes) -> None:
        self.folders[run_id].files[name] = data

    async def copy_in(self, run_id: int, source: str, name: str) -> None:
        self.folders[run_id].copies[name] = source

    async def output_size(self, run_id: int, limit: int) -> int:
        return len(self._checked_output(run_id, limit))

    async def output_chunks(self, run_id: int, limit: int, chunk_size: int = OUTPUT_CHUNK) -> AsyncIterator[bytes]:
        output = self._checked_output(run_id, limit)
        for start in range(0, len(output), chunk_size):
            yield output[start : start + chunk_size]

    def _checked_output(self, run_id: int, limit: int) -> bytes:
        files = self.folders.get(run_id)
        if files is None or (files.output is None and files.unsafe_output is None):
            raise FileNotFoundError(f"no output file for run {run_id}")
        if files.unsafe_output is not None:
            raise OutputRejected(f"the output is {files.unsafe_output}, not a regular file; nothing of it was read")
        assert files.output is not None
        if len(files.output) > limit:
            raise OutputRejected(
                f"the output file is {len(files.output)} bytes, more than the limit of {limit} (max_output_size)"
            )
        return files.output

    async def remove(self, run_id: int) -> None:
        if self.folders.pop(run_id, None) is not None:
            self.removed.append(run_id)

    async def run_ids(self) -> list[int]:
        return sorted(self.folders)

    async def runs_with_output(self) -> list[int]:
        return sorted(run_id for run_id, files in self.folders.items() if files.output or files.unsafe_output)

    # --- for fake algorithms -------------------------------------------------------
    def write_output(self, run_id: int, data: bytes | None) -> None:
        """What an algorithm writes; ``None`` deletes the output file."""
        self.folders[run_id].output = data

    def write_unsafe_output(self, run_id: int, what: str) -> None:
        """What a hostile algorithm leaves: ``what`` is e.g. "a symbolic link"."""
        self.folders[run_id].unsafe_output = what
