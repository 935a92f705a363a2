"""WebDataset export: plain tar shards, one sample per clip.

A sample is the members sharing one key, the row's clip id (a keyed pseudonym,
never a name from an input)::

    <clip_id>.embedding.npy   pooled embedding, (dim,)
    <clip_id>.json            the row's other exported columns, and the latent dtype
    <clip_id>.mp4             the anonymized clip, when the run wrote clips
    <clip_id>.tokens.npy      token grid (T, H, W, C), when the run stored one

Latents keep their stored dtype and shape. float16 is ``<f2`` in the ``.npy``;
NumPy's format has no bfloat16, so bfloat16 latents are stored as their bit
patterns, ``<u2``, and the ``.json`` says ``"latent_dtype": "bfloat16"``: read
them with ``np.load(f).view(ml_dtypes.bfloat16)`` or
``torch.from_numpy(np.load(f)).view(torch.bfloat16)``, no value is rounded.

Tar files are USTAR, written deterministically (member order, zero mtimes,
uid/gid 0, no user or group names), so the same export gives the same bytes.
Headers are ``tarfile``'s own (``TarInfo.tobuf``); the payloads are written as
they are, so a 4 MB token grid is not copied through ``tarfile``'s 10 KB stream
buffer.
"""

from __future__ import annotations

import functools
import io
import json
import tarfile
from collections.abc import Iterator

import numpy as np

from pipeline.export.files import HashingSink

TAR_FORMAT = tarfile.USTAR_FORMAT
EXTENSION = ".tar"
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


def member_header(name: str, size: int) -> bytes:
    """The tar header of one member, the same for the same name and size."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(TAR_FORMAT, "utf-8", "strict")


class TarWriter:
    """Members appended to a tar stream; ``close`` writes the end-of-archive blocks."""

    def __init__(self, sink: HashingSink) -> None:
        self._sink = sink

    def add(self, name: str, *parts) -> None:
        """A member whose content is ``parts`` one after the other (bytes or buffers)."""
        size = sum(memoryview(p).nbytes for p in parts)
        self._sink.write(member_header(name, size))
        for part in parts:
            self._sink.write(part)
        if size % _BLOCK:
            self._sink.write(b"\0" * (_BLOCK - size % _BLOCK))

    def close(self) -> None:
        # As tarfile ends an archive: two zero blocks, then zeros up to a whole record.
        end = self._sink.tell() + 2 * _BLOCK
        self._sink.write(b"\0" * (2 * _BLOCK + (-end) % _RECORD))


def npy_parts(array: np.ndarray) -> tuple[bytes, memoryview]:
    """``array`` in NumPy's ``.npy`` format as (header, data); bfloat16 as its ``<u2`` bit
    patterns. The data is a view of the array: a latent is never copied on its way out."""
    if array.dtype.name == "bfloat16":
        array = array.view("<u2")
    array = np.ascontiguousarray(array)
    return _npy_header(array.dtype.str, array.shape), memoryview(array).cast("B")


@functools.lru_cache(maxsize=64)
def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """NumPy's own ``.npy`` header, the same for every latent of one layout."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False,
                                                  "shape": shape})
    return header.getvalue()


def sample_members(key: str, metadata: dict, latents: dict[str, np.ndarray],
                   mp4: bytes | None) -> list[tuple]:
    """The members of one sample as (name, *parts), in a fixed order (by extension)."""
    members = [(f"{key}.{name}.npy", *npy_parts(value)) for name, value in latents.items()]
    members.append((f"{key}.json", json.dumps(metadata, sort_keys=True,
                                              separators=(",", ":")).encode()))
    if mp4 is not None:
        members.append((f"{key}.mp4", mp4))
    return sorted(members, key=lambda m: m[0])


def sample_key(member_name: str) -> str:
    """The key of a member, as webdataset groups them (the name up to its first dot)."""
    base = member_name.rsplit("/", 1)[-1]
    return base.split(".", 1)[0]


def read_members(handle) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every regular member of a tar stream, in order."""
    with tarfile.open(fileobj=handle, mode="r|") as archive:
        for info in archive:
            if not info.isreg():
                raise ValueError("an export tar holds only regular files")
            yield info.name, archive.extractfile(info).read()


def rewrite_without(handle, sink: HashingSink, removed: set[str]) -> tuple[int, list[str]]:
    """Copy a tar without the samples whose key is in ``removed``.

    Returns:
        (members kept, keys kept in order).
    """
    writer, kept, keys = TarWriter(sink), 0, []
    for name, data in read_members(handle):
        key = sample_key(name)
        if key in removed:
            continue
        writer.add(name, data)
        kept += 1
        if not keys or keys[-1] != key:
            keys.append(key)
    writer.close()
    return kept, keys
