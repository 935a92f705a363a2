"""An output folder on any Beam filesystem, as the audit code sees it (``privacy.output_store``)."""

from __future__ import annotations

import os
import secrets
from typing import BinaryIO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

# Written beside a file, then renamed over it: ``<name>.tmp-<8 hex>``. One left behind
# by a write that died is removed by the next publish (``transforms.stores.cleanup``).
TEMP_MARK = ".tmp-"


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
        _mkdirs(dest.rsplit("/", 1)[0])
        tmp = f"{dest}{TEMP_MARK}{secrets.token_hex(4)}"
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


class StagedWrites:
    """Small files that change together, written whole first and moved into place last.

    ``write`` puts each file under ``staging`` (a run's staging folder, a work area
    ``egoveil audit verify`` ignores); ``commit`` then moves them into the output in the
    order they were written, by renames, which need no space. A disk that fills up, or a
    run that dies, while they are being written leaves every published file as it was;
    the files that were staged are removed with the staging folder. Reads go to the
    output itself.

    Args:
        store: the output folder.
        staging: a folder on the same filesystem (the run's staging folder).
    """

    def __init__(self, store: FileSystemsStore, staging: str) -> None:
        self._store = store
        self._staging = staging.rstrip("/")
        self._staged: list[tuple[str, str]] = []

    def open(self, rel: str) -> BinaryIO:
        return self._store.open(rel)

    def read(self, rel: str) -> bytes:
        return self._store.read(rel)

    def exists(self, rel: str) -> bool:
        return self._store.exists(rel)

    def list_files(self) -> list[str]:
        return self._store.list_files()

    def write(self, rel: str, data: bytes) -> None:
        path = FileSystems.join(self._staging, "publish", *rel.split("/"))
        _mkdirs(path.rsplit("/", 1)[0])
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            handle.write(data)
        self._staged = [(r, p) for r, p in self._staged if r != rel] + [(rel, path)]

    def commit(self) -> None:
        """Move every staged file into place, in the order written."""
        for rel, path in self._staged:
            dest = self._store.path(rel)
            _mkdirs(dest.rsplit("/", 1)[0])
            if "://" not in dest:
                os.replace(path, dest)  # atomic on a local filesystem
                continue
            if FileSystems.exists(dest):
                FileSystems.delete([dest])
            FileSystems.rename([path], [dest])
        self._staged = []


def _mkdirs(folder: str) -> None:
    try:
        FileSystems.mkdirs(folder)
    except OSError:
        pass  # exists already, or the filesystem has no folders
