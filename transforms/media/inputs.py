"""Reading inputs safely: opening a location, its size, its content hash, and the limits.

Local files are opened directly; any other location through Beam's ``FileSystems``
(configured object stores), never by a decoder following a URL on its own
(PRIVACY.md 19). Every failure is a ``MediaError`` with a dead-letter reason and a
one-line detail that never quotes the location.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass


class MediaError(Exception):
    """An input that cannot be used, with a dead-letter reason and a one-line detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True, frozen=True)
class DecodeCaps:
    """Limits checked before decoding.

    Args:
        max_pixels: width * height of a frame.
        max_duration_s: recording duration.
        max_bytes: file size.
    """

    max_pixels: int = 7680 * 4320
    max_duration_s: float = 4 * 3600.0
    max_bytes: int = 64 * 1024**3


def _is_local(uri: str) -> bool:
    return "://" not in uri


def open_binary(uri: str):
    """Open ``uri`` for reading: a local file directly, anything else through Beam's
    FileSystems (no decompression guessing). Local files skip importing Beam, which
    costs seconds for a one-file ``egoveil redact``."""
    try:
        if _is_local(uri):
            return open(uri, "rb")
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.open(uri, mime_type="application/octet-stream",
                                compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as exc:  # noqa: BLE001 - missing, permission, unknown scheme
        raise MediaError("unreadable", f"cannot open input ({type(exc).__name__})") from None


def file_size(uri: str) -> int | None:
    try:
        if _is_local(uri):
            return os.path.getsize(uri)
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.match([uri])[0].metadata_list[0].size_in_bytes
    except Exception:  # noqa: BLE001 - size unknown: checked again while reading
        return None


def content_sha256(uri: str, max_bytes: int) -> tuple[str, int, bytes]:
    """The sha256, size and first bytes of a file, read in blocks.

    Raises:
        MediaError: unreadable, or larger than ``max_bytes``.
    """
    digest = hashlib.sha256()
    size = 0
    head = b""
    with open_binary(uri) as handle:
        while True:
            try:
                block = handle.read(1 << 22)
            except OSError as exc:
                raise MediaError("unreadable", f"read failed ({type(exc).__name__})") from None
            if not block:
                break
            if not head:
                head = block[:64]
            size += len(block)
            if size > max_bytes:
                raise MediaError("too_large", f"file is above the cap of {max_bytes} bytes")
            digest.update(block)
    if size == 0:
        raise MediaError("unreadable", "empty file")
    return digest.hexdigest(), size, head


@dataclass(slots=True)
class DecodeStats:
    decoded: int = 0
    corrupt: int = 0
