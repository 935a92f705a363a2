"""An output folder on any Beam filesystem, as the audit code sees it (``privacy.output_store``)."""

from __future__ import annotations

import os
import secrets
from typing import BinaryIO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def read_file(uri: str) -> bytes:
    """The whole of a small file (a consent registry, a key) on any Beam filesystem.

    Raises:
        OSError: it cannot be read (the message is Beam's; callers name the flag instead).
    """
    try:
        with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            return handle.read()
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - unknown scheme, missing extra, no access
        raise OSError(type(exc).__name__) from None


class FileSystemsStore:
    """Files under ``root`` (a local folder or an object-store prefix), by relative path.

    Args:
        root: the output folder.
    """

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") or "/"

    def path(self, rel: str) -> str:
        return FileSystems.join(self.root, *rel.split("/"))

    def open(self, rel: str) -> BinaryIO:
        return FileSystems.open(self.path(rel), compression_type=CompressionTypes.UNCOMPRESSED)

    def read(self, rel: str) -> bytes:
        with self.open(rel) as handle:
            return handle.read()

    def write(self, rel: str, data: bytes) -> None:
        dest = self.path(rel)
        parent = dest.rsplit("/", 1)[0]
        try:
            FileSystems.mkdirs(parent)
        except OSError:
            pass  # exists already, or the filesystem has no folders
        tmp = f"{dest}.tmp-{secrets.token_hex(4)}"
        with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            handle.write(data)
        if "://" not in dest:
            os.replace(tmp, dest)  # atomic on a local filesystem
            return
        # Object stores replace whole objects; a rename is a copy, then a delete.
        if FileSystems.exists(dest):
            FileSystems.delete([dest])
        FileSystems.rename([tmp], [dest])

    def exists(self, rel: str) -> bool:
        return FileSystems.exists(self.path(rel))

    def list_files(self) -> list[str]:
        prefix = self.path("")
        if not prefix.endswith("/"):
            prefix += "/"
        matched = FileSystems.match([prefix + "**"])[0].metadata_list
        return sorted(m.path[len(prefix):] for m in matched if m.path.startswith(prefix))
