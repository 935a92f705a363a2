"""A Parquet writer (and reader) whose latent columns go between memory and file in one copy.

pyarrow's Parquet writer copies every value into its encoder, again into the page,
and only then to the file: for a latent shard, where nearly every byte is a
fixed-width float16 value, that made writing 0.4-0.6 times as fast as writing the
same bytes raw (``bench/shards.py``). Yet a latent column chunk, stored the way
``schemas.latents`` lays it out (PLAIN, uncompressed, required, no statistics), is
nothing but page headers and the values' bytes as they are. So this writer:

- has pyarrow write the small columns (strings, numbers, with their dictionaries,
  compression and statistics) of all the row groups it is given into one small
  in-memory file, and reads that file's footer (``transforms.stores.thrift_compact``);
- writes each row group's column chunks to the file in schema order: the small
  ones copied from that file, the latent ones as page headers followed by the
  caller's buffers, handed to ``os.writev`` as they are (no copy in this process);
- writes the footer: pyarrow's own, with the latent columns added and the offsets
  moved to where the chunks landed.

By default pages are cut where pyarrow (25) cuts them, so the file is byte for byte
the one that ``pyarrow.parquet.write_table`` writes with the same settings (the
tests check this; should a later pyarrow cut pages elsewhere, that test fails while
the files stay valid Parquet). With ``align`` (shards use 64) a latent column chunk
is one page whose values start on an aligned file offset, with zeros between the
previous chunk and it: the kernel copies aligned bytes about a third faster
(``bench/shards.py``), and every Parquet reader finds chunks by their offsets.

``read_latent_chunk`` is the matching reader: it reads a latent chunk's values
straight into an Arrow buffer, one copy by the kernel.
"""

from __future__ import annotations

import base64
import functools
import io
import os
import struct
from collections.abc import Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from transforms.stores.thrift_compact import (
    I32,
    I64,
    LIST,
    STRUCT,
    Struct,
    ThriftList,
    decode,
    encode,
)

MAGIC = b"PAR1"
# pyarrow's defaults, which decide where its writer cuts pages.
PAGE_BYTES = 1 << 20
PAGE_ROWS = 20_000
BATCH_ROWS = 1024
MAX_PAGE_BYTES = 1 << 30  # page sizes are 32-bit in the format

# Parquet enums and FileMetaData / RowGroup / ColumnChunk / ColumnMetaData field ids.
_FIXED_LEN_BYTE_ARRAY, _REQUIRED, _PLAIN, _RLE, _DATA_PAGE, _UNCOMPRESSED = 7, 0, 0, 3, 0, 0
_FMD_SCHEMA, _FMD_NUM_ROWS, _FMD_ROW_GROUPS, _FMD_KV, _FMD_COLUMN_ORDERS = 2, 3, 4, 5, 7
_RG_COLUMNS, _RG_BYTES, _RG_ROWS, _RG_OFFSET, _RG_COMPRESSED, _RG_ORDINAL = 1, 2, 3, 5, 6, 7
_CC_FILE_OFFSET, _CC_META = 2, 3
_CC_PAGE_INDEX = (4, 5, 6, 7)  # offset and column index: not written (pyarrow's default)
_CMD_UNCOMPRESSED, _CMD_SIZE, _CMD_DATA_PAGE, _CMD_INDEX_PAGE, _CMD_DICT_PAGE = 6, 7, 9, 10, 11
_CMD_BLOOM = 14

try:
    _IOV_MAX = os.sysconf("SC_IOV_MAX")
except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
    _IOV_MAX = 16


class LatentParquetError(ValueError):
    """Values or settings this writer cannot store as the latent layout."""


def page_rows(rows: int, width: int) -> list[int]:
    """Rows in each data page of a ``width``-byte column chunk of ``rows`` rows, as
    pyarrow cuts them: batches of 1024 rows (never crossing the 20000-row page limit),
    a page ended after the batch that reaches 1 MB or 20000 rows."""
    pages, in_page, left = [], 0, rows
    while left:
        batch = min(BATCH_ROWS, left, PAGE_ROWS - in_page)
        in_page += batch
        left -= batch
        if in_page >= PAGE_ROWS or in_page * width >= PAGE_BYTES:
            pages.append(in_page)
            in_page = 0
    if in_page:
        pages.append(in_page)
    return pages


def chunk_pages(rows: int, width: int, align: int | None) -> list[int]:
    """Rows per page of a latent column chunk: pyarrow's cuts, or with ``align`` one
    page (the fewest pages of at most ``MAX_PAGE_BYTES``), whose values start on an
    aligned offset."""
    if not align:
        return page_rows(rows, width)
    per_page = max(1, MAX_PAGE_BYTES // width)
    return [min(per_page, rows - start) for start in range(0, rows, per_page)]


def unwritten(views: list[memoryview], written: int) -> list[memoryview]:
    """What is left of ``views`` after the first ``written`` bytes went out."""
    for i, view in enumerate(views):
        if written < view.nbytes:
            return [view[written:], *views[i + 1:]] if written else views[i:]
        written -= view.nbytes
    return []


@functools.lru_cache(maxsize=64)  # pages of a column chunk mostly have the same size
def _page_header(rows: int, width: int) -> bytes:
    size = rows * width
    levels = Struct().set(1, I32, rows).set(2, I32, _PLAIN).set(3, I32, _RLE).set(4, I32, _RLE)
    levels.set(5, STRUCT, Struct())  # empty statistics, as pyarrow writes them
    return encode(Struct().set(1, I32, _DATA_PAGE).set(2, I32, size).set(3, I32, size)
                  .set(5, STRUCT, levels))


def _schema_element(name: str, width: int) -> Struct:
    return (Struct().set(1, I32, _FIXED_LEN_BYTE_ARRAY).set(2, I32, width)
            .set(3, I32, _REQUIRED).set(4, 8, name.encode()))


def _footer(data: bytes) -> Struct:
    if data[-4:] != MAGIC or data[:4] != MAGIC:
        raise LatentParquetError("pyarrow wrote something that is not a Parquet file")
    (length,) = struct.unpack("<i", data[-8:-4])
    meta, end = decode(data, len(data) - 8 - length)
    if end != len(data) - 8:
        raise LatentParquetError("unexpected bytes after the Parquet footer")
    return meta


def _check_options(options: Mapping) -> None:
    """Refuse what the splice cannot carry: page indexes and bloom filters point at
    offsets this writer does not move, an encrypted footer cannot be edited, and
    sorting columns are counted in the small columns' numbering."""
    for key in ("write_page_index", "bloom_filter_options", "encryption_properties",
                "sorting_columns", "write_page_checksum"):
        if options.get(key):
            raise LatentParquetError(f"{key} is not supported by the latent writer")


class _Cursor:
    """The next bytes of a column's buffers, as views of them (never copies)."""

    __slots__ = ("parts", "index")

    def __init__(self, parts: list[memoryview]) -> None:
        self.parts, self.index = parts, 0

    def take(self, nbytes: int) -> list[memoryview]:
        out = []
        while nbytes:
            part = self.parts[self.index]
            if part.nbytes <= nbytes:
                out.append(part)
                nbytes -= part.nbytes
                self.index += 1
            else:
                out.append(part[:nbytes])
                self.parts[self.index] = part[nbytes:]
                nbytes = 0
        return out


class LatentParquetWriter:
    """Writes a Parquet file of ``schema`` one row group at a time.

    Args:
        sink: a local path, or a binary file object (an unbuffered ``io.FileIO`` is
            written with ``os.writev``, any other through its ``write``).
        schema: the file's Arrow schema, metadata included.
        latent_columns: names of the non-nullable ``fixed_size_binary`` columns to
            write directly; every other column goes through pyarrow.
        align: start each latent column chunk's values on a multiple of this many
            bytes, in one page (None: pyarrow's pages and offsets).
        **small_options: ``pyarrow.parquet.ParquetWriter`` options (compression,
            dictionaries, statistics, ...) for the other columns. The latent columns
            are always PLAIN, uncompressed, without dictionary or statistics; with
            options that say so for them too (``schemas.latents.writer_options``), the
            file is the one pyarrow writes.
    """

    def __init__(self, sink, schema: pa.Schema, latent_columns: Iterable[str],
                 align: int | None = None, **small_options) -> None:
        latent = [n for n in schema.names if n in set(latent_columns)]
        for name in latent:
            f = schema.field(name)
            if not pa.types.is_fixed_size_binary(f.type) or f.nullable:
                raise LatentParquetError(f"latent column {name!r} must be non-nullable "
                                         f"fixed_size_binary, not {f.type}")
        _check_options(small_options)
        if align is not None and (align < 1 or align & (align - 1)):
            raise LatentParquetError(f"align must be a power of two, got {align}")
        self.schema = schema
        self._align = align
        self._widths = {n: schema.field(n).type.byte_width for n in latent}
        self._small_schema = pa.schema([f for f in schema if f.name not in self._widths],
                                       metadata=schema.metadata)
        self._options = {k: self._only_small(v) for k, v in small_options.items()}
        self._options["store_schema"] = True
        self._owns = isinstance(sink, (str, os.PathLike))
        self._file = open(sink, "wb", buffering=0) if self._owns else sink
        # Only an unbuffered file is written through its descriptor: a buffered one may
        # hold bytes that must land first.
        self._fd = self._file.fileno() if isinstance(self._file, io.FileIO) else None
        self._pos = 0
        self._row_groups: list[Struct] = []
        self._rows = 0
        self._template: Struct | None = None
        self._closed = False
        self._pending: list[memoryview] = []
        self._write([MAGIC])

    def _only_small(self, value):
        """A per-column option (dict or list of names) without the latent columns."""
        if isinstance(value, Mapping):
            return {k: v for k, v in value.items() if k not in self._widths}
        if isinstance(value, (list, tuple, set)):
            return [k for k in value if k not in self._widths]
        return value

    # -- output ------------------------------------------------------------------------

    def _write(self, buffers: Sequence) -> None:
        """Queue ``buffers`` for the file (written by ``_flush``, a row group at a time,
        so a row group costs a few system calls, not one per column chunk)."""
        views = [v for v in (memoryview(b).cast("B") for b in buffers) if v.nbytes]
        self._pos += sum(v.nbytes for v in views)
        self._pending += views

    def _flush(self) -> None:
        views, self._pending = self._pending, []
        if self._fd is None:
            for view in views:
                self._file.write(view)
            return
        for start in range(0, len(views), _IOV_MAX):
            chunk = views[start:start + _IOV_MAX]
            while chunk:  # a short write goes on from where it stopped
                written = os.writev(self._fd, chunk)
                if not written:
                    raise OSError("the shard file took no bytes")
                chunk = unwritten(chunk, written)

    # -- row groups --------------------------------------------------------------------

    def write_rows(self, small: pa.Table, latents: Mapping[str, Sequence],
                   row_group_size: int | None = None) -> None:
        """Rows in row groups of ``row_group_size`` (all in one by default).

        Args:
            small: the other columns of the rows.
            latents: for each latent column, buffers whose concatenation is its values,
                row after row: one buffer for the whole column, or one per row.
            row_group_size: rows per row group.
        """
        if self._closed:
            raise LatentParquetError("the writer is closed")
        rows = small.num_rows
        if rows == 0:
            return
        cursors = {}
        for name, width in self._widths.items():
            parts = [memoryview(b).cast("B") for b in latents[name]]
            if sum(p.nbytes for p in parts) != rows * width or any(
                    p.nbytes % width for p in parts):
                raise LatentParquetError(f"{name} values are not {rows} rows of {width} bytes")
            cursors[name] = _Cursor(parts)
        step = max(1, row_group_size or rows)
        sizes = [min(step, rows - start) for start in range(0, rows, step)]
        if self._small_schema.names:
            # One pyarrow file holds the small columns of every row group of this call:
            # one writer and one footer to decode, whatever the number of row groups.
            mini = self._small_file(small.select(self._small_schema.names), step)
            meta = _footer(mini)
            self._template = self._template or meta
            groups = meta.get(_FMD_ROW_GROUPS).items
            if [g.get(_RG_ROWS) for g in groups] != sizes:
                raise LatentParquetError("pyarrow cut the small columns' row groups elsewhere")
        else:  # latent columns only: the row groups are all ours
            mini, groups = b"", [Struct().set(_RG_ROWS, I64, n) for n in sizes]
        for group, count in zip(groups, sizes):
            self._row_group(group, count, mini, cursors)

    def _row_group(self, group: Struct, rows: int, mini: bytes, cursors: Mapping) -> None:
        small = iter(group.get(_RG_COLUMNS).items) if group.has(_RG_COLUMNS) else iter(())
        columns = []
        total = compressed = 0
        for name in self.schema.names:
            if name in self._widths:
                chunk = self._latent_chunk(name, rows, cursors[name])
            else:
                chunk = self._copy_chunk(next(small), mini)
            md = chunk.get(_CC_META)
            total += md.get(_CMD_UNCOMPRESSED)
            compressed += md.get(_CMD_SIZE)
            columns.append(chunk)
        group.set(_RG_COLUMNS, LIST, ThriftList(STRUCT, columns))
        group.set(_RG_BYTES, I64, total).set(_RG_COMPRESSED, I64, compressed)
        first = columns[0].get(_CC_META)
        group.set(_RG_OFFSET, I64, first.get(_CMD_DICT_PAGE, first.get(_CMD_DATA_PAGE)))
        if group.has(_RG_ORDINAL):
            group.set(_RG_ORDINAL, 4, len(self._row_groups))
        self._flush()
        self._row_groups.append(group)
        self._rows += rows

    def write_table(self, table: pa.Table, row_group_size: int | None = None) -> None:
        """``table`` (of this writer's schema) in row groups of ``row_group_size`` rows."""
        if not table.schema.equals(self.schema, check_metadata=False):
            raise LatentParquetError("table schema does not match the writer's schema")
        latents = {}
        for name, width in self._widths.items():
            column = table.column(name)
            column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
            if column.null_count:
                raise LatentParquetError(f"latent column {name!r} has nulls")
            data = column.buffers()[1]
            latents[name] = [memoryview(data)[column.offset * width:
                                              (column.offset + len(column)) * width]]
        self.write_rows(table.select(self._small_schema.names), latents, row_group_size)

    def _small_file(self, small: pa.Table | None, row_group_size: int = 1) -> bytes:
        """pyarrow's file of the small columns (of no rows at all for ``None``)."""
        sink = pa.BufferOutputStream()
        with pq.ParquetWriter(sink, self._small_schema, **self._options) as writer:
            if small is not None:
                writer.write_table(small, row_group_size=row_group_size)
        return sink.getvalue().to_pybytes()

    def _copy_chunk(self, chunk: Struct, mini: bytes) -> Struct:
        if any(chunk.has(f) for f in _CC_PAGE_INDEX):
            raise LatentParquetError("page indexes are not supported by the latent writer")
        md = chunk.get(_CC_META)
        if md.has(_CMD_BLOOM):
            raise LatentParquetError("bloom filters are not supported by the latent writer")
        begin = md.get(_CMD_DICT_PAGE, md.get(_CMD_DATA_PAGE))
        size = md.get(_CMD_SIZE)
        delta = self._pos - begin
        for fid in (_CMD_DATA_PAGE, _CMD_INDEX_PAGE, _CMD_DICT_PAGE):
            if md.has(fid):
                md.set(fid, I64, md.get(fid) + delta)
        if chunk.get(_CC_FILE_OFFSET):
            chunk.set(_CC_FILE_OFFSET, I64, chunk.get(_CC_FILE_OFFSET) + delta)
        self._write([memoryview(mini)[begin:begin + size]])
        return chunk

    def _latent_chunk(self, name: str, rows: int, cursor: _Cursor) -> Struct:
        width = self._widths[name]
        counts = chunk_pages(rows, width, self._align)
        if self._align:  # zeros between chunks, so the values start on an aligned offset
            self._write([bytes(-(self._pos + len(_page_header(counts[0], width)))
                               % self._align)])
        start = self._pos
        pieces = []
        for count in counts:
            pieces.append(_page_header(count, width))
            pieces += cursor.take(count * width)
        self._write(pieces)
        size = self._pos - start
        stats = Struct().set(1, I32, _DATA_PAGE).set(2, I32, _PLAIN).set(3, I32, len(counts))
        md = (Struct().set(1, I32, _FIXED_LEN_BYTE_ARRAY)
              .set(2, LIST, ThriftList(I32, [_RLE, _PLAIN]))
              .set(3, LIST, ThriftList(8, [name.encode()]))
              .set(4, I32, _UNCOMPRESSED).set(5, I64, rows)
              .set(_CMD_UNCOMPRESSED, I64, size).set(_CMD_SIZE, I64, size)
              .set(_CMD_DATA_PAGE, I64, start)
              .set(13, LIST, ThriftList(STRUCT, [stats])))
        return Struct().set(_CC_FILE_OFFSET, I64, 0).set(_CC_META, STRUCT, md)

    # -- footer ------------------------------------------------------------------------

    def close(self) -> None:
        """Write the footer (the file is a Parquet file from here on) and close."""
        if self._closed:
            return
        self._closed = True
        try:
            meta = self._template or _footer(self._small_file(None))
            self._write_footer(meta)
        finally:
            if self._owns:
                self._file.close()

    def abort(self) -> None:
        """Close without a footer, so a file cut short by an error reads as no Parquet
        file at all rather than as a shard that lacks rows."""
        self._closed = True
        if self._owns:
            self._file.close()

    def _write_footer(self, meta: Struct) -> None:
        small_elements = iter(meta.get(_FMD_SCHEMA).items[1:])
        root = meta.get(_FMD_SCHEMA).items[0]
        root.set(5, I32, len(self.schema))
        elements = [root]
        for name in self.schema.names:
            elements.append(_schema_element(name, self._widths[name]) if name in self._widths
                            else next(small_elements))
        meta.set(_FMD_SCHEMA, LIST, ThriftList(STRUCT, elements))
        meta.set(_FMD_NUM_ROWS, I64, self._rows)
        meta.set(_FMD_ROW_GROUPS, LIST, ThriftList(STRUCT, self._row_groups))
        if meta.has(_FMD_COLUMN_ORDERS):  # one per leaf column, all the type-defined order
            type_order = Struct().set(1, STRUCT, Struct())
            meta.set(_FMD_COLUMN_ORDERS, LIST, ThriftList(STRUCT, [type_order] * len(self.schema)))
        arrow = base64.b64encode(self.schema.serialize().to_pybytes())
        for item in meta.get(_FMD_KV).items:
            if item.get(1) == b"ARROW:schema":
                item.set(2, 8, arrow)
        footer = encode(meta)
        self._write([footer, struct.pack("<i", len(footer)), MAGIC])
        self._flush()

    def __enter__(self) -> LatentParquetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# -- reading -----------------------------------------------------------------------------

_HEADER_PEEK = 256  # a latent page header is about 25 bytes; statistics would make it longer


def _read_as_written(fd: int, pos: int, end: int, rows: int, width: int,
                     view: memoryview) -> bool:
    """Read a chunk whose pages are cut as this writer (and pyarrow) cuts them in one
    ``preadv``: the values into ``view``, the page headers aside, then compared with
    the headers expected. False, with nothing trusted, when the chunk is cut otherwise."""
    for counts in (chunk_pages(rows, width, 1), page_rows(rows, width)):
        headers = [_page_header(count, width) for count in counts]
        if sum(map(len, headers)) + rows * width == end - pos:
            break
    else:
        return False
    if 2 * len(counts) > _IOV_MAX:
        return False
    seen = [bytearray(len(h)) for h in headers]
    vectors, done = [], 0
    for count, header in zip(counts, seen):
        vectors += [header, view[done * width:(done + count) * width]]
        done += count
    _read_fully(fd, vectors, pos)
    return all(bytes(a) == b for a, b in zip(seen, headers))


def _read_fully(fd: int, buffers: list, offset: int) -> None:
    """Fill ``buffers`` from ``offset`` on; a short read goes on from where it stopped."""
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        got = os.preadv(fd, views, offset)
        if not got:
            raise OSError("the shard ended inside a column chunk")
        offset += got
        views = unwritten(views, got)


def read_latent_chunk(file, meta: pq.FileMetaData, row_group: int, column: int) -> pa.Buffer | None:
    """A latent column chunk's values, read by the kernel straight into one Arrow buffer.

    The read side of this writer: for a chunk in the latent layout (fixed-width,
    required, PLAIN, uncompressed, no dictionary), the values of each page are read
    with ``os.preadv`` into their place in the result, so reading costs what reading
    the raw bytes costs (pyarrow's reader copies them once more, out of its page).

    Args:
        file: the shard, opened as a local unbuffered binary file.
        meta: the shard's footer (``pyarrow.parquet.ParquetFile.metadata``).
        row_group: the row group's index.
        column: the column's index.

    Returns:
        The buffer, or None when the chunk is stored otherwise (read it through
        pyarrow then).
    """
    chunk = meta.row_group(row_group).column(column)
    field = meta.schema.column(column)
    if (chunk.physical_type != "FIXED_LEN_BYTE_ARRAY" or chunk.compression != "UNCOMPRESSED"
            or chunk.has_dictionary_page or field.max_definition_level
            or field.max_repetition_level):
        return None
    width, rows = field.length, chunk.num_values
    out = pa.allocate_buffer(rows * width)  # Arrow's pool: the memory raw reads get too
    view = memoryview(out).cast("B")
    fd, pos, done = file.fileno(), chunk.data_page_offset, 0
    end = pos + chunk.total_compressed_size
    if _read_as_written(fd, pos, end, rows, width, view):
        return out
    while done < rows:
        if pos >= end:
            return None
        head = os.pread(fd, _HEADER_PEEK, pos)
        try:
            header, size = decode(head)
        except ValueError:  # a longer header than a latent page has: not ours
            return None
        page = header.get(5)
        count = page.get(1) if page is not None else None
        if (page is None or header.get(1) != _DATA_PAGE or page.get(2) != _PLAIN or not count
                or header.get(2) != header.get(3) or header.get(3) != count * width
                or done + count > rows):
            return None
        _read_fully(fd, [view[done * width:(done + count) * width]], pos + size)
        pos += size + count * width
        done += count
    return out
