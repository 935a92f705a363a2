"""Reading inputs safely: opening a location, its size, its content hash, and the limits.

Local files are opened directly; any other location through Beam's ``FileSystems``
(configured object stores), never by a decoder following a URL on its own
(PRIVACY.md 19). Only regular files are read: a FIFO, a device or a socket (named
directly or through a symbolic link) is refused from ``stat`` without being opened
for reading, and is opened non-blocking where it could be swapped in between, so
it can neither hang a worker nor feed it endless bytes. A file's size is checked
against the cap from ``stat`` (or an object store's listing) before a byte is read.
Every failure is a ``MediaError`` with a dead-letter reason and a one-line detail
that never quotes the location.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
from dataclasses import dataclass

from privacy.detectors.base import MAX_FRAME_PIXELS


class MediaError(Exception):
    """An input that cannot be used, with a dead-letter reason and a one-line detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True, frozen=True)
class DecodeCaps:
    """Limits checked before decoding, and again while frames stream in.

    Args:
        max_pixels: width * height of a frame (at most what the face detector takes,
            ``privacy.detectors.base.MAX_FRAME_PIXELS``).
        max_duration_s: recording duration; no frame may lie later than this.
        max_bytes: file size.
        max_fps: frame rate, declared or measured over the whole file.
    """

    max_pixels: int = MAX_FRAME_PIXELS
    max_duration_s: float = 4 * 3600.0
    max_bytes: int = 64 * 1024**3
    max_fps: float = 240.0

    @property
    def max_frames(self) -> int:
        """Frames a recording may hold: the duration cap at the frame-rate cap."""
        return math.ceil(self.max_duration_s * self.max_fps)


def _is_local(uri: str) -> bool:
    return "://" not in uri


_NOT_REGULAR = "not a regular file (a FIFO, device, socket or folder); only files are read"


def _regular_stat(uri: str) -> os.stat_result:
    """``stat`` of a local input (through symbolic links), refusing anything but a file.

    Raises:
        MediaError: missing or unreadable (``unreadable``), or not a regular file
            (``unsupported``).
    """
    try:
        info = os.stat(uri)
    except OSError as exc:
        raise MediaError("unreadable", f"cannot open input ({type(exc).__name__})") from None
    if not stat.S_ISREG(info.st_mode):
        raise MediaError("unsupported", _NOT_REGULAR)
    return info


def _open_regular(uri: str):
    """Open a local regular file for reading. ``stat`` refuses special files before any
    open; the open itself is non-blocking and re-checked with ``fstat``, so a FIFO
    swapped in between cannot block it."""
    before = _regular_stat(uri)
    try:
        fd = os.open(uri, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise MediaError("unreadable", f"cannot open input ({type(exc).__name__})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != \
                (before.st_dev, before.st_ino):
            raise MediaError("unsupported", _NOT_REGULAR)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_binary(uri: str):
    """Open ``uri`` for reading: a local regular file directly, anything else through
    Beam's FileSystems (no decompression guessing). Local files skip importing Beam,
    which costs seconds for a one-file ``egoveil redact``.

    Raises:
        MediaError: missing, unreadable or not a regular file.
    """
    if _is_local(uri):
        return _open_regular(uri)
    try:
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.open(uri, mime_type="application/octet-stream",
                                compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as exc:  # noqa: BLE001 - missing, permission, unknown scheme
        raise MediaError("unreadable", f"cannot open input ({type(exc).__name__})") from None


def file_size(uri: str) -> int | None:
    """A file's size from ``stat`` or the object store's listing, without reading it.

    Raises:
        MediaError: a local path that is not a regular file.
    """
    if _is_local(uri):
        try:
            return _regular_stat(uri).st_size
        except MediaError as exc:
            if exc.reason == "unreadable":
                return None  # opening it says why
            raise
    try:
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.match([uri])[0].metadata_list[0].size_in_bytes
    except Exception:  # noqa: BLE001 - size unknown: checked again while reading
        return None


def check_size(uri: str, max_bytes: int) -> None:
    """Refuse a file above ``max_bytes`` (or not a regular file) before reading a byte.

    Raises:
        MediaError: ``too_large``, ``unsupported`` or ``unreadable``.
    """
    size = file_size(uri)
    if size is not None and size > max_bytes:
        raise MediaError("too_large", f"file of {size} bytes is above the cap of {max_bytes}")
    if size == 0:
        raise MediaError("unreadable", "empty file")


def content_sha256(uri: str, max_bytes: int) -> tuple[str, int, bytes]:
    """The sha256, size and first bytes of a file, read in blocks.

    The size is checked from ``stat`` (or the listing) first; the count of bytes read is
    checked again as they come, for a file that grows or a store that did not say.

    Raises:
        MediaError: unreadable, not a regular file, or larger than ``max_bytes``.
    """
    check_size(uri, max_bytes)
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
