"""Latent shard files: rows to Arrow tables and Parquet files in the measured layout.

A shard is streamed to its file one row group at a time
(``schemas.latents.ROW_GROUP_BYTES``) with the layout ``schemas.latents`` defines;
``transforms.write_shards`` is the stage that groups rows into shards, and
``egoveil erase`` rewrites shards through the same functions.
"""

from __future__ import annotations

import hashlib
import operator

import pyarrow as pa

from schemas.elements import LatentRow
from schemas.latents import (
    LATENT_ALIGN,
    LATENT_COLUMNS,
    ROW_GROUP_BYTES,
    LatentLayout,
    row_group_rows,
    writer_options,
)
from transforms.stores.latent_parquet import LatentParquetWriter

DEFAULT_TARGET_SHARD_BYTES = 256 * 1024**2
_ROW_OVERHEAD_BYTES = 160  # the small columns of one row, before compression
_JOIN_BELOW = 64 * 1024


def shard_name(index: int, sha256: str | None = None) -> str:
    """``part-NNNNN.parquet`` in staging; published names add the content hash, so a
    published name is never reused for other bytes."""
    return f"part-{index:05d}-{sha256[:12]}.parquet" if sha256 else f"part-{index:05d}.parquet"


def shard_of(clip_id: str, num_shards: int) -> int:
    return int(hashlib.sha256(clip_id.encode()).hexdigest()[:8], 16) % num_shards


_row_order = operator.attrgetter("recording_id", "view", "segment_index", "clip_index", "clip_id")


def _check_latents(values: list[bytes | None], width: int, name: str) -> None:
    if None in values:
        raise ValueError(f"a row has no {name} but the shard layout stores it")
    if set(map(len, values)) - {width}:
        raise ValueError(f"{name} values are not {width} bytes each")


def _latent_column(values: list[bytes | None], width: int, name: str) -> pa.Array:
    _check_latents(values, width, name)
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values),
                                                [None, pa.py_buffer(b"".join(values))])


def rows_to_table(rows: list[LatentRow], schema: pa.Schema, sort: bool = True) -> pa.Table:
    """Rows as a table of ``schema`` (sorted by recording, view, segment, clip)."""
    if sort:
        rows = sorted(rows, key=_row_order)
    # One C-level pass over the rows (attrgetter, then zip) instead of a Python loop per
    # column: for 2 KB rows that loop, not Parquet, was most of the write time.
    names = schema.names
    columns = zip(*map(operator.attrgetter(*names), rows)) if rows else [[] for _ in names]
    arrays = []
    for f, values in zip(schema, columns):
        if f.name in LATENT_COLUMNS:
            arrays.append(_latent_column(list(values), f.type.byte_width, f.name))
        else:
            arrays.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def shard_writer(sink, schema: pa.Schema) -> LatentParquetWriter:
    """A writer of shards of ``schema`` to a path or binary file, in the measured layout."""
    return LatentParquetWriter(sink, schema, LATENT_COLUMNS, align=LATENT_ALIGN,
                               **writer_options(schema))


def _latent_values(values: list, width: int, name: str) -> list:
    """One latent column's values as buffers for the writer: the rows' own bytes
    objects when rows are large, one joined buffer when they are small (one memcpy of
    2 KB rows costs less than handing the kernel 1024 pieces at a time)."""
    _check_latents(values, width, name)
    return values if width >= _JOIN_BELOW else [b"".join(values)]


def write_shard(rows: list[LatentRow], schema: pa.Schema, path: str, layout: LatentLayout,
                row_group_bytes: int = ROW_GROUP_BYTES) -> int:
    """Write sorted rows to a local Parquet file, one row group at a time; returns rows."""
    rows = sorted(rows, key=_row_order)
    per_group = row_group_rows(layout.row_bytes + _ROW_OVERHEAD_BYTES, row_group_bytes)
    small = [f for f in schema if f.name not in LATENT_COLUMNS]
    small_schema = pa.schema(small, metadata=schema.metadata)
    latent = [(f.name, f.type.byte_width) for f in schema if f.name in LATENT_COLUMNS]
    with shard_writer(path, schema) as writer:
        writer.write_rows(
            rows_to_table(rows, small_schema, sort=False),
            {name: _latent_values(list(map(operator.attrgetter(name), rows)), width, name)
             for name, width in latent},
            per_group)
    return len(rows)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 * 1024**2), b""):
            digest.update(block)
    return digest.hexdigest()
