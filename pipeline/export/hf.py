"""Hugging Face ``datasets`` export: Parquet files per split with declared features.

``datasets.load_dataset(DEST)`` reads the folder through its ``README.md`` (the
card's ``configs`` name each split's files, ``dataset_info`` declares the
features) and gets:

- the exported scalar columns with their Arrow types;
- ``embedding``: ``List(float16, length=dim)``, a fixed-length list;
- ``tokens``: ``Array4D(shape=(T, H, W, C), dtype=float16)``;
- ``mp4``: the anonymized clip's bytes (``Value("binary")``) when the run wrote clips.

Arrow and ``datasets`` have no bfloat16, so bfloat16 latents are written as
float32, which holds every bfloat16 value exactly (the card says so). The
features are ``datasets``' own (``Features.arrow_schema``, so each file also
carries them in its ``huggingface`` schema metadata).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.latents import LatentLayout, decode_latents

DATA_DIR = "data"
EXTENSION = ".parquet"
MP4_COLUMN = "mp4"
_ROW_GROUP_BYTES = 64 * 1024**2


def _datasets():
    try:
        import datasets
    except ImportError:  # pragma: no cover - the hf extra is not installed
        from pipeline.errors import UserError

        raise UserError("--to hf needs the Hugging Face datasets library: pip install "
                        "'egoveil[hf]'") from None
    return datasets


def value_dtype(layout: LatentLayout) -> str:
    return "float32" if layout.dtype == "bfloat16" else "float16"


def features(schema: pa.Schema, columns: list[str], layout: LatentLayout, clips: bool):
    """The ``datasets.Features`` of an export with these source columns."""
    datasets = _datasets()
    out = {}
    scalar = datasets.Features.from_arrow_schema(
        pa.schema([schema.field(c) for c in columns if c not in ("embedding", "tokens")]))
    for name in columns:
        if name == "embedding":
            out[name] = datasets.List(datasets.Value(value_dtype(layout)),
                                      length=layout.embedding_dim)
        elif name == "tokens":
            out[name] = datasets.Array4D(shape=layout.tokens_shape, dtype=value_dtype(layout))
        else:
            out[name] = scalar[name]
    if clips:
        out[MP4_COLUMN] = datasets.Value("binary")
    return datasets.Features(out)


def _values(column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...],
            layout: LatentLayout) -> pa.Array:
    """A latent column's values as one flat Arrow array of the export's value type."""
    array = decode_latents(column, shape, layout.dtype)
    if layout.dtype == "bfloat16":
        return pa.array(array.reshape(-1).astype(np.float32))
    return pa.array(array.reshape(-1))


def _nested(values: pa.Array, shape: tuple[int, ...]) -> pa.Array:
    """Flat values as ``datasets``' ArrayND storage: lists nested once per dimension."""
    array = values
    for size in reversed(shape):
        count = len(array) // size
        offsets = pa.array(np.arange(0, (count + 1) * size, size, dtype=np.int32))
        array = pa.ListArray.from_arrays(offsets, array)
    return array


def to_table(table: pa.Table, columns: list[str], layout: LatentLayout, schema: pa.Schema,
             mp4: list[bytes | None] | None) -> pa.Table:
    """Source rows (with ``columns``) as a table of the export schema ``schema``."""
    arrays = []
    for name in schema.names:
        if name == MP4_COLUMN:
            arrays.append(pa.array(mp4, pa.binary()))
        elif name == "embedding":
            values = _values(table.column(name), (layout.embedding_dim,), layout)
            arrays.append(pa.FixedSizeListArray.from_arrays(values, layout.embedding_dim))
        elif name == "tokens":
            shape = layout.tokens_shape
            storage = _nested(_values(table.column(name), shape, layout), shape)
            arrays.append(pa.ExtensionArray.from_storage(schema.field(name).type, storage))
        else:
            arrays.append(table.column(name).cast(schema.field(name).type))
    return pa.Table.from_arrays(arrays, schema=schema)


def rows_per_group(table: pa.Table) -> int:
    """Rows per row group of about 64 MB for tables like ``table``."""
    per_row = max(1, table.nbytes // max(1, table.num_rows))
    return max(1, _ROW_GROUP_BYTES // per_row)


class ParquetWriter:
    """One Parquet file of the export schema, uncompressed and without dictionaries.

    Latents and clips do not compress, and the small columns are a few hundred bytes
    of a row: left plain, every value is in the file as its bytes, so an auditor can
    check with a byte search that an erased row's values are gone.
    """

    def __init__(self, sink, schema: pa.Schema) -> None:
        self._writer = pq.ParquetWriter(sink, schema, compression="none",
                                        use_dictionary=False, write_statistics=False)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table, row_group_size=rows_per_group(table))

    def close(self) -> None:
        self._writer.close()


def rewrite_without(handle, sink, removed: set[str]) -> tuple[int, list[str]]:
    """Copy an export Parquet file without the rows whose ``clip_id`` is in ``removed``.

    Returns:
        (rows kept, their clip ids in order).
    """
    import pyarrow.compute as pc

    table = pq.read_table(handle)
    kept = table.filter(pc.invert(pc.is_in(table.column("clip_id"),
                                           value_set=pa.array(sorted(removed), pa.string()))))
    writer = ParquetWriter(sink, table.schema)
    if kept.num_rows:
        writer.write(kept)
    writer.close()
    return kept.num_rows, kept.column("clip_id").to_pylist()
