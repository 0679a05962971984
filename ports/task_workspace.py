"""The per-run task folders on the node's disk."""
from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class TaskWorkspace(Protocol):
    """``task-<run id>`` folders holding ``input``, ``output`` and ``token``."""

    def tasks_dir(self) -> str:
        """Host path of the folder that holds the task folders."""

    async def prepare(self, run_id: int, input_data: bytes, token: str) -> None:
        """Create the folder with ``input``, an empty ``output`` and ``token`` (overwrites)."""

    async def add_file(self, run_id: int, name: str, data: bytes) -> None:
        """Write ``name`` (a path relative to the run's folder) with ``data``."""

    async def copy_in(self, run_id: int, source: str, name: str) -> None:
        """Copy the host file or folder ``source`` to ``name`` inside the run's folder."""

    async def read_output(self, run_id: int, limit: int) -> bytes:
        """The output file; ``ValueError`` past ``limit`` bytes, ``FileNotFoundError`` if missing."""

    async def remove(self, run_id: int) -> None:
        """Delete the folder; a missing folder is not an error."""

    async def run_ids(self) -> list[int]:
        """Runs that have a folder."""

    async def runs_with_output(self) -> list[int]:
        """Runs whose folder holds a non-empty output file (the node creates it empty)."""
