"""Latent shard files: rows to Arrow tables and Parquet files in the measured layout.

Shards are written by ``pyarrow.parquet.ParquetWriter`` with the layout and settings
``schemas.latents`` defines, streamed to the file one row group at a time
(``schemas.latents.ROW_GROUP_BYTES``), so a shard's rows are never held twice;
``transforms.write_shards`` is the stage that groups rows into shards, and
``egoveil erase`` rewrites shards through ``shard_writer``.
"""

from __future__ import annotations

import contextlib
import hashlib
import operator
import os

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.elements import LatentRow
from schemas.latents import (
    LATENT_COLUMNS,
    ROW_GROUP_BYTES,
    LatentLayout,
    row_group_rows,
    writer_options,
)

DEFAULT_TARGET_SHARD_BYTES = 256 * 1024**2
_ROW_OVERHEAD_BYTES = 160  # the small columns of one row, before compression


def shard_name(index: int, sha256: str | None = None) -> str:
    """``part-NNNNN.parquet`` in staging; published names add the content hash, so a
    published name is never reused for other bytes."""
    return f"part-{index:05d}-{sha256[:12]}.parquet" if sha256 else f"part-{index:05d}.parquet"


def shard_of(clip_id: str, num_shards: int) -> int:
    return int(hashlib.sha256(clip_id.encode()).hexdigest()[:8], 16) % num_shards


_row_order = operator.attrgetter("recording_id", "view", "segment_index", "clip_index", "clip_id")


def _latent_column(values: list[bytes | None], width: int, name: str) -> pa.Array:
    if None in values:
        raise ValueError(f"a row has no {name} but the shard layout stores it")
    if set(map(len, values)) - {width}:
        raise ValueError(f"{name} values are not {width} bytes each")
    # pyarrow copies the values into its own pool, 5-6 times faster than joining them
    # into one new bytes object first (fresh pages every row group).
    return pa.array(values, type=pa.binary(width))


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


def shard_writer(sink, schema: pa.Schema) -> pq.ParquetWriter:
    """pyarrow's Parquet writer of shards of ``schema`` to a path or binary file, with the
    measured layout's settings (``schemas.latents.writer_options``)."""
    return pq.ParquetWriter(sink, schema, **writer_options(schema))


def write_shard(rows: list[LatentRow], schema: pa.Schema, path: str, layout: LatentLayout,
                row_group_bytes: int = ROW_GROUP_BYTES) -> int:
    """Write sorted rows to a local Parquet file, one row group at a time; returns rows.

    Raises:
        ValueError: a row's latent value is missing or of the wrong size; no file is
            left at ``path``.
    """
    rows = sorted(rows, key=_row_order)
    per_group = row_group_rows(layout.row_bytes + _ROW_OVERHEAD_BYTES, row_group_bytes)
    try:
        with shard_writer(path, schema) as writer:
            for start in range(0, len(rows), per_group):
                group = rows_to_table(rows[start:start + per_group], schema, sort=False)
                writer.write_table(group, row_group_size=group.num_rows)
    except BaseException:
        # pyarrow's writer writes its footer even when leaving on an error; a shard cut
        # short must not read as a shard that merely lacks rows (pq.write_table does the same).
        with contextlib.suppress(OSError):
            os.remove(path)
        raise
    return len(rows)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 * 1024**2), b""):
            digest.update(block)
    return digest.hexdigest()
