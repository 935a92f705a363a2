"""Reading and replacing files of a published output, on local disks and object stores.

Paths inside an output come from its ``manifest.json``; a tampered manifest must
not make egoveil read or delete anything outside the output (PRIVACY.md 20), so
every relative path is checked before it is joined.
"""

from __future__ import annotations

import os
import re
import secrets

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class UnsafePath(ValueError):
    """A relative path that could leave the output folder."""


def confined(output_dir: str, rel: str) -> str:
    """``output_dir`` joined with ``rel``, once ``rel`` is known to stay inside it.

    Raises:
        UnsafePath: absolute, empty, ``..`` or odd characters in any part.
    """
    parts = rel.split("/")
    if not rel or rel.startswith("/") or not all(_SAFE_PART.match(p) for p in parts):
        raise UnsafePath("a path in manifest.json leaves the output folder or has odd "
                         "characters")
    return FileSystems.join(output_dir, *parts)


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read()


def write_new(path: str, data: bytes) -> None:
    """Write a file named after its content; one already there must hold the same bytes.

    New shards are never written over anything else: a file of that name is either
    the same shard from an interrupted erasure, or a collision, which is refused.
    """
    if FileSystems.exists(path):
        if read_bytes(path) == data:
            return
        raise FileExistsError("refusing to overwrite an existing output file")
    write_atomically(path, data)  # beside, then renamed: never a half file under its name


def write_atomically(path: str, data: bytes) -> None:
    """Replace ``path`` so that a reader sees the old bytes or the new ones, never a mix."""
    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(data)
    if "://" not in path:
        os.replace(tmp, path)
        return
    # Object stores replace whole objects; a rename is a copy, then a delete.
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def delete_if_present(paths: list[str]) -> int:
    existing = [p for p in paths if FileSystems.exists(p)]
    if existing:
        FileSystems.delete(existing)
    return len(existing)
