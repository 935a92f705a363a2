"""The published output an export reads: verified as ``egoveil audit verify`` verifies it,
then read only through what its ``manifest.json`` lists.

An export reads each shard and clip once: ``open_source(..., content_on_read=True)``
runs every check of ``egoveil audit verify`` but leaves the content of the shards and
clips (sha256, size, rows) to the reading, which hashes every byte as it reads it
(``ShardReader``, ``ClipReader``) and checks it against the manifest: a clip
before it is used, a shard (parsed a row group at a time) before the export
records anything; the files it does not read are checked on their own
(``check_unread``). A file that differs stops the export, which then removes what it
wrote: nothing derived from it is published. A shard's row count is checked from the
footer it was parsed with; an exported clip's frame count (which ``audit verify``
counts with PyAV, half a millisecond a clip) is not recounted: the manifest's count
is sealed with the clip's sha256, and a clip with that sha256 is the file it counts.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.audit_append import check_log
from pipeline.errors import UserError
from pipeline.export.files import open_read
from pipeline.export.hashing import HashThread, Sha256
from pipeline.output_files import UnsafePath, confined
from privacy.audit_chain import check_chain
from privacy.audit_seal import SealSigner
from privacy.audit_verify import Finding, check_files, content_findings, verify_output
from privacy.pseudonyms import PseudonymKeyError
from privacy.tombstones import TombstoneError, Tombstones
from schemas.audit import EVENTS_FILE, MANIFEST, RECORD_FILE
from schemas.latents import LatentLayout, shard_metadata
from transforms.discover import normalize_uri
from transforms.stores.filesystems import FileSystemsStore
from transforms.stores.keys import load_key
from transforms.stores.tombstones import read_tombstones


@dataclass(slots=True, frozen=True)
class SourceFile:
    """A shard or clip as the source's manifest lists it."""

    path: str   # relative to the source folder
    sha256: str
    bytes: int
    rows: int | None


@dataclass(slots=True)
class ExportSource:
    """A verified, published egoveil output.

    Attributes:
        uri: the folder (local path or object-store prefix).
        head: the log head that was verified.
    """

    uri: str
    manifest: dict
    record: dict
    entries: list[dict]
    head: str
    tombstones: Tombstones
    shards: list[SourceFile] = field(default_factory=list)
    clips: dict[str, SourceFile] = field(default_factory=dict)
    unchecked: bool = False  # the shards' and clips' content is left to the reading

    @property
    def store(self) -> FileSystemsStore:
        return FileSystemsStore(self.uri)

    def path(self, rel: str) -> str:
        return confined(self.uri, rel)

    @property
    def content_sha256(self) -> str | None:
        return self.manifest.get("content_sha256")

    @property
    def source_bytes(self) -> int:
        return sum(f.bytes for f in self.shards) + sum(f.bytes for f in self.clips.values())

    def schema_and_layout(self):
        """The shards' Arrow schema and latent layout (from the first shard's footer)."""
        if not self.shards:
            raise UserError("DIR holds no latent shards; nothing to export")
        with self.store.open(self.shards[0].path) as handle:
            schema = pq.read_schema(handle)
        return schema, LatentLayout.from_metadata(shard_metadata(schema))


def not_verified(finding: Finding | str, action: str = "exported") -> UserError:
    """The one-line refusal of a folder that does not verify."""
    return UserError(f"DIR does not verify ({finding}); `egoveil audit verify DIR` says more; "
                     f"nothing was {action}")


def open_source(directory: str, action: str = "exported", *, verify: bool = True,
                expect_head: str | None = None, content_on_read: bool = False) -> ExportSource:
    """Verify a published output and read its manifest, record, log and tombstones.

    Args:
        directory: the output folder.
        action: what the refusal says was not done.
        verify: run every check of ``egoveil audit verify`` first. Without it (a
            folder verified earlier in the same command, re-read under its lock),
            ``expect_head`` must be the head that was verified.
        expect_head: the log head the folder must still have.
        content_on_read: leave the content of the shards and clips to the reading
            (see the module docstring): the caller reads each through ``ShardReader``
            or ``ClipReader``, and checks the rest with ``check_unread``.

    Raises:
        UserError: not a folder, not published, or anything ``egoveil audit verify``
            checks does not hold (the first problem is named), or the head moved.
    """
    uri = normalize_uri(directory)
    if "://" not in uri and not os.path.isdir(uri):
        raise UserError("DIR is not a folder; give a published egoveil output folder")
    store = FileSystemsStore(uri)
    if not store.exists(MANIFEST):
        raise UserError(f"DIR has no manifest.json: it is not a published egoveil output; "
                        f"nothing was {action}")
    head = expect_head
    if verify:
        read_later = ()
        if content_on_read:
            try:
                read_later = [f["path"] for f in json.loads(store.read(MANIFEST))["files"]
                              if f.get("kind") in ("latents", "clip")]
            except Exception:  # noqa: BLE001 - verify_output names what is wrong
                read_later = ()
        report = verify_output(store, read_later=read_later)
        if not report.ok:
            raise not_verified(report.findings[0], action)
        head = report.head
    try:
        manifest = json.loads(store.read(MANIFEST))
        record = json.loads(store.read(RECORD_FILE))
        chain = check_chain(store.read(EVENTS_FILE))
        entries = chain.entries
        tombstones = read_tombstones(uri)
        shards, clips = [], {}
        for entry in sorted(manifest["files"], key=lambda f: f["path"]):
            confined(uri, entry["path"])
            item = SourceFile(entry["path"], entry["sha256"], int(entry["bytes"]),
                              entry.get("rows"))
            if entry["kind"] == "latents":
                shards.append(item)
            elif entry["kind"] == "clip":
                clips[entry["path"].rsplit("/", 1)[-1].split(".", 1)[0]] = item
    except (UnsafePath, TombstoneError) as exc:
        raise UserError(f"DIR: {exc}; nothing was {action}") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"DIR's manifest, record or log cannot be read; nothing was "
                        f"{action}") from None
    if not chain.ok or chain.head != head:
        raise UserError(f"DIR changed while it was being {action} (its audit log moved on); "
                        "nothing was recorded: run the command again")
    return ExportSource(uri=uri, manifest=manifest, record=record, entries=entries,
                        head=chain.head, tombstones=tombstones, shards=shards, clips=clips,
                        unchecked=verify and content_on_read)


def check_unread(source: ExportSource, read: set[str], action: str = "exported") -> None:
    """Check the content of the shards and clips ``read`` does not name, as ``egoveil audit
    verify`` does (a source opened with ``content_on_read``).

    Raises:
        UserError: the first one, in path order, that does not hold.
    """
    if not source.unchecked:
        return
    listed = {f["path"]: f for f in source.manifest["files"]
              if f.get("kind") in ("latents", "clip") and f["path"] not in read}
    for _, (_, found) in sorted(check_files(source.store, listed).items()):
        if found:
            raise not_verified(found[0], action)


def _entry(item: SourceFile, kind: str) -> dict:
    return {"path": item.path, "kind": kind, "sha256": item.sha256, "bytes": item.bytes,
            "rows": item.rows}


class SourceChecks:
    """The digests of the shards read, checked against the manifest once they are read.

    Args:
        hashes: the thread that hashes them, beside the reading and writing.
        action: what the refusal says was not done.
    """

    def __init__(self, hashes: HashThread, action: str = "exported") -> None:
        self._hashes = hashes
        self.action = action
        self._pending: list[tuple[SourceFile, str, Sha256, int, int | None]] = []

    def sha256(self) -> Sha256:
        return self._hashes.sha256()

    def add(self, item: SourceFile, kind: str, digest: Sha256, size: int,
            rows: int | None = None) -> None:
        """A file read whole: its digest (still being computed), size and rows counted."""
        self._pending.append((item, kind, digest, size, rows))

    def altered(self, item: SourceFile, kind: str) -> UserError:
        """The refusal for a file seen to differ before it was hashed (its size)."""
        return not_verified(content_findings(item.path, _entry(item, kind), "", -1)[0],
                            self.action)

    def check(self) -> None:
        """Wait for the digests and compare each file with its manifest entry.

        Raises:
            UserError: naming the first file, in path order, that does not hold.
        """
        found: list[Finding] = []
        for item, kind, digest, size, rows in self._pending:
            found += content_findings(item.path, _entry(item, kind), digest.hexdigest(), size,
                                      rows)
        self._pending = []
        if found:
            raise not_verified(min(found, key=lambda f: f.where), self.action)


class ClipReader:
    """Clips of the source, each read whole once and checked before it is used: a clip is
    small, and hashed while it is still in the CPU's cache, by the thread that read it."""

    def __init__(self, root: str, action: str = "exported") -> None:
        self._root, self._action = root, action

    def read(self, item: SourceFile) -> bytes:
        """The clip's bytes, once they are the manifest's.

        Raises:
            UserError: the clip is not the file the manifest lists.
        """
        with open_read(confined(self._root, item.path)) as handle:
            data = handle.read()
        found = content_findings(item.path, _entry(item, "clip"),
                                 hashlib.sha256(data).hexdigest(), len(data))
        if found:
            raise not_verified(found[0], self._action)
        return data


_EMPTY = pa.py_buffer(b"")


class _Window:
    """The part of a shard held in memory, as the file object pyarrow reads: a read
    outside it fails, so that nothing is parsed from bytes that are not hashed."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pos = 0
        self._offset, self._buffer = 0, _EMPTY
        self.closed = False

    def hold(self, offset: int, buffer: pa.Buffer) -> None:
        self._offset, self._buffer = offset, buffer

    def read(self, n: int = -1) -> pa.Buffer:
        start = self._pos - self._offset
        if n < 0:
            n = self._size - self._pos
        if start < 0 or start + n > self._buffer.size:
            raise OSError("a read outside the row group's bytes")
        self._pos += n
        return self._buffer.slice(start, n)  # a view: parsed from the hashed bytes

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = pos if whence == 0 else (self._pos + pos if whence == 1 else self._size + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


class _RandomAccess:
    """Reads at offsets: pyarrow's own file for a local path (no copy through Python
    bytes), else Beam's.

    A window is freed by the hashing thread, not the one that read it: from the
    system allocator it goes back at once, where Arrow's default pool (mimalloc) kept
    such buffers for a while and a 10x export's peak memory grew by one or two
    windows (bench/export.py).
    """

    def __init__(self, path: str) -> None:
        self._local = "://" not in path
        self._handle = pa.OSFile(path, "rb", memory_pool=pa.system_memory_pool()) \
            if self._local else open_read(path)
        if self._local:
            self.size = self._handle.size()
        else:
            self._handle.seek(0, os.SEEK_END)
            self.size = self._handle.tell()

    def read(self, offset: int, n: int) -> pa.Buffer:
        self._handle.seek(offset)
        if self._local:
            data = self._handle.read_buffer(n)
        else:
            data = pa.py_buffer(self._handle.read(n))
        if data.size != n:
            raise OSError("the file ended early")
        return data

    def close(self) -> None:
        self._handle.close()


_FOOTER_END = 8  # the footer's length (uint32) and the magic "PAR1"


class ShardReader:
    """A source shard read once, front to back, a row group at a time.

    Each row group's bytes are read once, queued for hashing and parsed from that same
    buffer; the footer is read first (Parquet's index is at the end) and hashed last,
    where it lies. ``check`` compares the digest, size and row count with the manifest.
    Memory held: one row group's bytes and its table, whatever the shard's size.

    Args:
        root: the source folder.
        item: the shard as the manifest lists it.
        checks: where the digest goes.
    """

    def __init__(self, root: str, item: SourceFile, checks: SourceChecks) -> None:
        self._root, self._item, self._checks = root, item, checks
        self._file: _RandomAccess | None = _RandomAccess(confined(root, item.path))
        self._digest = checks.sha256()
        self._hashed = 0
        if self._file.size != item.bytes:
            self.close()
            raise checks.altered(item, "latents")
        try:
            if self._file.size < 12:
                raise OSError("too short for Parquet")
            end = self._file.read(self._file.size - _FOOTER_END, _FOOTER_END)
            length = struct.unpack("<I", end.to_pybytes()[:4])[0]
            self._footer_at = self._file.size - _FOOTER_END - length
            if self._footer_at < 4:
                raise OSError("not a Parquet file")
            self._footer = self._file.read(self._footer_at, length + _FOOTER_END)
            self.metadata = pq.read_metadata(pa.BufferReader(b"PAR1" + self._footer))
            self._window = _Window(self._file.size)
            self.parquet = pq.ParquetFile(pa.PythonFile(self._window, mode="r"),
                                          metadata=self.metadata, pre_buffer=False)
        except Exception as exc:  # noqa: BLE001 - tampered or not Parquet: which, the hash says
            raise self._failed(exc) from None

    @property
    def schema(self) -> pa.Schema:
        return self.parquet.schema_arrow

    def _windows(self) -> list[tuple[int, int]]:
        """Byte ranges that tile the shard up to its footer, one per row group (each
        holding that row group's column chunks); one range for a file laid out otherwise."""
        meta, bounds, start = self.metadata, [], 0
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            chunks = []
            for j in range(group.num_columns):
                column = group.column(j)
                first = column.dictionary_page_offset if column.has_dictionary_page \
                    else column.data_page_offset
                chunks.append((first, first + column.total_compressed_size))
            low = min(c[0] for c in chunks) if chunks else start
            high = max(c[1] for c in chunks) if chunks else start
            if low < start or high > self._footer_at:
                return [(0, self._footer_at)] * meta.num_row_groups
            bounds.append((start, high))
            start = high
        if bounds:
            bounds[-1] = (bounds[-1][0], self._footer_at)
        return bounds

    def row_groups(self, columns: Sequence[str]) -> Iterator[pa.Table]:
        """Every row group's ``columns``, in order, parsed from the bytes that are hashed."""
        try:
            windows = self._windows()
            for number, (start, stop) in enumerate(windows):
                if not number or windows[number - 1] != (start, stop):  # else: one window
                    window = self._file.read(start, stop - start)
                    self._digest.update(window)
                    self._hashed = stop
                    self._window.hold(start, window)
                    del window  # held by the window and the hashing only
                table = self.parquet.read_row_group(number, columns=list(columns),
                                                    use_threads=False)
                if number + 1 == len(windows) or windows[number + 1] != (start, stop):
                    self._window.hold(0, _EMPTY)  # parsed: freed once hashed
                yield table
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - tampered or not Parquet: which, the hash says
            raise self._failed(exc) from None

    def finish(self) -> None:
        """Hash what was not read (the footer, or bytes after the last row group) and
        hand the digest to the checks; the shard is closed."""
        if self._hashed < self._footer_at:
            self._digest.update(self._file.read(self._hashed, self._footer_at - self._hashed))
        self._digest.update(self._footer)
        self._checks.add(self._item, "latents", self._digest, self._file.size,
                         self.metadata.num_rows)
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def refuse(self, error: UserError) -> UserError:
        """What to raise instead of ``error`` (found in the bytes read): the shard's own
        check, if it is not the file the manifest lists, else ``error``."""
        return self._failed(error, error)

    def _failed(self, exc: Exception, otherwise: UserError | None = None) -> UserError:
        """A shard that cannot be read: altered (named as ``egoveil audit verify`` names
        it), else unreadable as a shard."""
        self.close()
        found = check_files(FileSystemsStore(self._root), {
            self._item.path: _entry(self._item, "latents")}).get(self._item.path, (0, []))[1]
        if found:
            return not_verified(found[0], self._checks.action)
        if otherwise is not None:
            return otherwise
        return UserError(f"DIR: {self._item.path} cannot be read as a latent shard "
                         f"({type(exc).__name__}); nothing was {self._checks.action}")


def owner_signer(key_file: str | None, source: ExportSource, action: str = "exported") -> \
        SealSigner:
    """The audit key of DIR's owner, which signs the seal that records an export or sync.

    Raises:
        UserError: no usable key, or not the key DIR was written with.
    """
    try:
        key = load_key(key_file)
    except PseudonymKeyError as exc:
        raise UserError(str(exc)) from None
    if not key.names(source.record.get("key_id")):
        raise UserError(f"the key given (key id {key.key_id}) is not the key DIR was written "
                        f"with (key id {source.record.get('key_id')}); only that key signs "
                        f"DIR's audit log. Pass it with --key-file; nothing was {action}")
    signer = key.seal_signer()
    check_log(source.uri, signer)
    return signer
