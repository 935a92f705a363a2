"""Export files on any Beam filesystem: written once, counted and hashed as they are written.

An export folder (``DEST``) is local or an object-store prefix; every byte goes
through Beam's ``FileSystems``, like the rest of egoveil. Files are named by the
export (split, source shard, part), never by anything that came with an input.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.export.hashing import HashThread
from pipeline.output_files import delete_if_present


class HashingSink:
    """A binary file object that hashes and counts what goes through it.

    Args:
        handle: the file written to.
        hashes: a ``HashThread`` that hashes beside the writer (what is written must
            then not change afterwards: bytes, or views of arrays nobody writes to);
            without one the writer hashes itself.
    """

    def __init__(self, handle, hashes: HashThread | None = None) -> None:
        self._handle = handle
        self._sha = hashes.sha256() if hashes is not None else hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data) -> int:
        self._handle.write(data)
        self._sha.update(data)
        n = memoryview(data).nbytes
        self.size += n
        return n

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._handle.flush()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True  # the handle is closed by whoever opened it

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


def ensure_folder(path: str) -> None:
    try:
        FileSystems.mkdirs(path)
    except OSError:
        pass  # exists already, or the filesystem has no folders


@contextmanager
def created(path: str, replace: bool = False,
            hashes: HashThread | None = None) -> Iterator[HashingSink]:
    """A new file at ``path``; with ``replace``, written beside it and renamed over it
    at the end, so that a reader sees the old bytes or the new ones. ``hashes``: see
    ``HashingSink``."""
    ensure_folder(path.rsplit("/", 1)[0])
    target = f"{path}.tmp-{secrets.token_hex(4)}" if replace else path
    try:
        with FileSystems.create(target,
                                compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            sink = HashingSink(handle, hashes)
            yield sink
    except BaseException:
        delete_if_present([target])
        raise
    if replace:
        if "://" not in path:
            os.replace(target, path)
        else:  # object stores replace whole objects; a rename is a copy, then a delete
            delete_if_present([path])
            FileSystems.rename([target], [path])


def open_read(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def file_sha256(path: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open_read(path) as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size
