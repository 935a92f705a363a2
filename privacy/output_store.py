"""What the audit code needs from an output folder, so that it stays plain Python.

``transforms.stores.filesystems.FileSystemsStore`` implements it over Beam's
``FileSystems`` (local folders, ``gs://``, ``s3://``); paths are relative to the
output folder and use ``/``.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol


class OutputStore(Protocol):
    """Files of one output folder, addressed by relative paths."""

    def open(self, rel: str) -> BinaryIO:
        """A readable binary file object (the caller closes it)."""

    def read(self, rel: str) -> bytes:
        """The whole file."""

    def write(self, rel: str, data: bytes) -> None:
        """Create or replace a file; readers never see a partly written file."""

    def exists(self, rel: str) -> bool:
        """Whether the file exists."""

    def list_files(self) -> list[str]:
        """Every file under the folder, relative, sorted, hidden ones included."""
