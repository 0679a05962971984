"""The per-run task folders on the node's disk."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

# Pieces in which an output file is read back (bounded memory for any output size).
OUTPUT_CHUNK = 1024 * 1024


@runtime_checkable
class TaskWorkspace(Protocol):
    """``task-<run id>`` folders holding ``input``, ``output`` and ``token``.

    Everything in a folder but what ``prepare`` wrote may have been made by an untrusted
    algorithm: the output is read without following links and never from a pipe,
    device or directory (``OutputRejected`` says what was found instead).
    """

    def tasks_dir(self) -> str:
        """Host path of the folder that holds the task folders."""

    async def write_marker(self, name: str, data: bytes) -> str:
        """Write the file ``name`` beside the task folders (a check that other hosts see them);
        returns its host path."""

    async def remove_marker(self, name: str) -> None:
        """Delete a file ``write_marker`` made; a missing one is not an error."""

    async def prepare(self, run_id: int, input_data: bytes, token: str) -> None:
        """Create a fresh folder (an old one is removed first) with ``input``, an empty
        ``output`` and ``token``."""

    async def add_file(self, run_id: int, name: str, data: bytes) -> None:
        """Write ``name`` (a path relative to the run's folder) with ``data``."""

    async def copy_in(self, run_id: int, source: str, name: str) -> None:
        """Copy the host file or folder ``source`` to ``name`` inside the run's folder."""

    async def output_size(self, run_id: int, limit: int) -> int:
        """Size of the output file once it is checked to be a plain file of at most ``limit``
        bytes; ``OutputRejected`` otherwise, ``FileNotFoundError`` when there is none."""

    def output_chunks(self, run_id: int, limit: int, chunk_size: int = OUTPUT_CHUNK) -> AsyncIterator[bytes]:
        """The output file from its start, in pieces of at most ``chunk_size`` bytes, with the
        checks of ``output_size`` made again at open; each call reads it anew."""

    async def remove(self, run_id: int) -> None:
        """Delete the folder; a missing folder is not an error."""

    async def run_ids(self) -> list[int]:
        """Runs that have a folder."""

    async def runs_with_output(self) -> list[int]:
        """Runs whose folder holds output: a non-empty file, or anything that is not a
        regular file (the node creates it empty; reading it says what it is)."""
