"""Task folders kept in memory."""
from __future__ import annotations

from attrs import define, field


@define
class TaskFiles:
    input: bytes
    token: str
    output: bytes | None = b""
    files: dict[str, bytes] = field(factory=dict)
    copies: dict[str, str] = field(factory=dict)  # name in the folder -> host source


class MemoryTaskWorkspace:
    def __init__(self) -> None:
        self.folders: dict[int, TaskFiles] = {}
        self.removed: list[int] = []

    def tasks_dir(self) -> str:
        return "/memory/tasks"

    async def prepare(self, run_id: int, input_data: bytes, token: str) -> None:
        self.folders[run_id] = TaskFiles(input=input_data, token=token)

    async def add_file(self, run_id: int, name: str, data: bytes) -> None:
        self.folders[run_id].files[name] = data

    async def copy_in(self, run_id: int, source: str, name: str) -> None:
        self.folders[run_id].copies[name] = source

    async def read_output(self, run_id: int, limit: int) -> bytes:
        files = self.folders.get(run_id)
        if files is None or files.output is None:
            raise FileNotFoundError(f"no output file for run {run_id}")
        if len(files.output) > limit:
            raise ValueError(f"output of run {run_id} is {len(files.output)} bytes, more than the limit of {limit}")
        return files.output

    async def remove(self, run_id: int) -> None:
        if self.folders.pop(run_id, None) is not None:
            self.removed.append(run_id)

    async def run_ids(self) -> list[int]:
        return sorted(self.folders)

    async def runs_with_output(self) -> list[int]:
        return sorted(run_id for run_id, files in self.folders.items() if files.output)

    # --- for fake algorithms -------------------------------------------------------
    def write_output(self, run_id: int, data: bytes | None) -> None:
        """What an algorithm writes; ``None`` deletes the output file."""
        self.folders[run_id].output = data
