"""The latent shard format: Parquet schema, file metadata, physical layout and decoding.

A shard row holds a clip's pooled embedding and, on request, its token grid. Both
are stored as ``fixed_size_binary`` of little-endian float16 or bfloat16 values,
uncompressed, without dictionary or statistics, and written and read by pyarrow.
Measured in ``bench/shards.py`` (results in ``bench/results/shards.md``), that is
the best layout tried: ``binary`` writes up to a fifth faster but reads 2 KB rows at
about half the speed, ``fixed_size_list<float16>`` is 10-20 times slower both ways,
and zstd saves 8% of the bytes for a quarter of the write and a seventh of the read
speed. The dtype and shape are in the file metadata (and in each column's field
metadata), and ``decode_latents`` turns a column into a (rows, *shape) array with no
per-row copy. The writer settings live here, beside the schema, so that every
program that writes or rewrites shards (a run, erasure, exports) keeps the measured
layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = "1.2"  # 1.1: token grids; 1.2: pair_id (stereo pairs)
EMBEDDING_DTYPE = "float16"
LATENT_DTYPES = ("float16", "bfloat16")

# A row's qa_status: verified on the first pass, verified after the stronger second pass,
# or redacted with verification turned off.
QA_VERIFIED = "verified"
QA_REREDACTED_VERIFIED = "reredacted_verified"
QA_UNVERIFIED = "redacted_unverified"
QA_STATUSES = (QA_VERIFIED, QA_REREDACTED_VERIFIED, QA_UNVERIFIED)

METADATA_KEY = b"egoveil"

# Latent columns (fixed-width binary) and the small columns readers filter on.
LATENT_COLUMNS = ("embedding", "tokens")
DICTIONARY_COLUMNS = ("recording_id", "wearer_id", "view", "encoder_id", "qa_status",
                      "device_id", "location_cell", "pair_id")
# A row group is what one reader (a DataLoader worker, a DuckDB thread, a datasets
# streaming step) takes at a time: 8, 32 and 128 MB groups read equally fast
# (bench/shards.py), and 32 MB spreads a 256 MB shard over 8 workers.
ROW_GROUP_BYTES = 32 * 1024**2


@dataclass(slots=True, frozen=True)
class LatentLayout:
    """What a shard's latent columns hold.

    Attributes:
        embedding_dim: values per pooled embedding.
        dtype: storage dtype of every latent value, ``float16`` or ``bfloat16``.
        token_grid: (time, height, width) of the stored token grid, or None for none.
        token_dim: values per token (the encoder's hidden size).
    """

    embedding_dim: int
    dtype: str = EMBEDDING_DTYPE
    token_grid: tuple[int, int, int] | None = None
    token_dim: int | None = None

    def __post_init__(self) -> None:
        if self.embedding_dim <= 0:
            raise ValueError(f"embedding_dim must be positive, got {self.embedding_dim}")
        if self.dtype not in LATENT_DTYPES:
            raise ValueError(f"latent dtype must be one of {', '.join(LATENT_DTYPES)}, "
                             f"got {self.dtype!r}")
        if self.token_grid is not None:
            if len(self.token_grid) != 3 or min(self.token_grid) < 1:
                raise ValueError(f"token grid must be three positive sizes, got {self.token_grid}")
            if not self.token_dim or self.token_dim < 1:
                raise ValueError("a token grid needs a positive token_dim")

    @property
    def itemsize(self) -> int:
        return 2

    @property
    def embedding_bytes(self) -> int:
        return self.embedding_dim * self.itemsize

    @property
    def tokens_shape(self) -> tuple[int, int, int, int] | None:
        """(time, height, width, channels) of one row's tokens, or None."""
        if self.token_grid is None:
            return None
        return (*self.token_grid, int(self.token_dim))

    @property
    def token_bytes(self) -> int:
        shape = self.tokens_shape
        return 0 if shape is None else int(np.prod(shape)) * self.itemsize

    @property
    def row_bytes(self) -> int:
        """Latent bytes per row (what shard and row-group sizes are counted in)."""
        return self.embedding_bytes + self.token_bytes

    def describe(self) -> dict:
        return {"embedding_dim": self.embedding_dim, "dtype": self.dtype,
                "tokens_shape": list(self.tokens_shape) if self.tokens_shape else None}

    @classmethod
    def from_metadata(cls, meta: dict) -> LatentLayout:
        """The layout recorded in a shard's ``egoveil`` metadata."""
        tokens = meta.get("tokens") or None
        return cls(embedding_dim=int(meta["embedding_dim"]),
                   dtype=meta.get("embedding_dtype", EMBEDDING_DTYPE),
                   token_grid=tuple(tokens["shape"][:3]) if tokens else None,
                   token_dim=int(tokens["shape"][3]) if tokens else None)


def _latent_field(name: str, width: int, dtype: str, shape: tuple[int, ...]) -> pa.Field:
    return pa.field(name, pa.binary(width), nullable=False, metadata={
        b"dtype": dtype.encode(), b"shape": json.dumps(list(shape)).encode(),
        b"byte_order": b"little"})


def latent_schema(layout: LatentLayout | int, metadata: dict | None = None) -> pa.Schema:
    """The shard schema for a latent layout.

    Args:
        layout: the latent columns' layout, or just the embedding size (float16, no tokens).
        metadata: run-level facts (encoder id and revision, pretrained or not, config
            hash); stored as JSON under the ``egoveil`` key with the layout.
    """
    if not isinstance(layout, LatentLayout):
        layout = LatentLayout(embedding_dim=int(layout))
    fields = [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("recording_id", pa.string(), nullable=False),
        pa.field("wearer_id", pa.string(), nullable=True),
        pa.field("view", pa.string(), nullable=False),
        pa.field("segment_index", pa.int32(), nullable=False),
        pa.field("clip_index", pa.int32(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("frame_count", pa.int32(), nullable=False),
        pa.field("fps", pa.float32(), nullable=False),
        pa.field("encoder_id", pa.string(), nullable=False),
        pa.field("encoder_pretrained", pa.bool_(), nullable=False),
        _latent_field("embedding", layout.embedding_bytes, layout.dtype,
                      (layout.embedding_dim,)),
        pa.field("faces_redacted", pa.int32(), nullable=False),
        pa.field("qa_status", pa.string(), nullable=False),
        # Keyed pseudonym of the device serial, and the coarse location cell that a
        # run kept (None unless --location-geohash is given).
        pa.field("device_id", pa.string(), nullable=True),
        pa.field("location_cell", pa.string(), nullable=True),
        # Shared by the two views of a stereo pair over the same frames (left and right
        # rows, or the one ``stereo`` row that holds both); null for a view without a partner.
        pa.field("pair_id", pa.string(), nullable=True),
    ]
    if layout.tokens_shape is not None:
        fields.append(_latent_field("tokens", layout.token_bytes, layout.dtype,
                                    layout.tokens_shape))
    file_meta = {
        **(metadata or {}),
        "schema_version": SCHEMA_VERSION,
        "embedding_dim": layout.embedding_dim,
        "embedding_dtype": layout.dtype,
        "tokens": ({"shape": list(layout.tokens_shape), "dtype": layout.dtype}
                   if layout.tokens_shape else None),
    }
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(file_meta, sort_keys=True)})


def shard_metadata(schema: pa.Schema) -> dict:
    """The ``egoveil`` metadata of a shard schema (read back from a file's schema)."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError("not an egoveil latent shard: no 'egoveil' schema metadata")
    return json.loads(raw)


def writer_options(schema: pa.Schema) -> dict:
    """``pyarrow.parquet.ParquetWriter`` keyword arguments for the measured layout.

    Latent columns: no compression, dictionary or statistics (min/max of a 4 MB
    token grid would be copied into the footer). Small columns: zstd, dictionaries
    for the repetitive strings, statistics for predicate push-down.
    """
    names = schema.names
    return {
        "compression": {n: ("none" if n in LATENT_COLUMNS else "zstd") for n in names},
        "use_dictionary": [n for n in DICTIONARY_COLUMNS if n in names],
        "write_statistics": [n for n in names if n not in LATENT_COLUMNS],
        "store_schema": True,
    }


def row_group_rows(row_bytes: int, target_bytes: int = ROW_GROUP_BYTES) -> int:
    """Rows per row group so that a group holds about ``target_bytes``."""
    return max(1, target_bytes // max(1, row_bytes))


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype for a stored latent dtype (bfloat16 through ``ml_dtypes``)."""
    if dtype == "float16":
        return np.dtype("<f2")
    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    raise ValueError(f"unknown latent dtype {dtype!r}")


def latent_buffer(column: pa.Array | pa.ChunkedArray) -> tuple[pa.Buffer, int]:
    """The data buffer of a fixed-width binary column and the byte offset of row 0."""
    if isinstance(column, pa.ChunkedArray):
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if not pa.types.is_fixed_size_binary(column.type):
        raise ValueError(f"latent columns are fixed_size_binary, got {column.type}")
    if column.null_count:
        raise ValueError("latent column has nulls")
    return column.buffers()[1], column.offset * column.type.byte_width


def decode_latents(column: pa.Array | pa.ChunkedArray, shape: tuple[int, ...],
                   dtype: str = EMBEDDING_DTYPE) -> np.ndarray:
    """A latent column as one (rows, *shape) array, viewing Arrow's buffer (no row copies).

    A column of several chunks is combined first (one copy of the column).
    """
    buf, start = latent_buffer(column)
    rows = len(column)
    count = rows * int(np.prod(shape))
    flat = np.frombuffer(buf, dtype=numpy_dtype(dtype), count=count, offset=start)
    return flat.reshape(rows, *shape)


def embedding_array(column: pa.Array | pa.ChunkedArray, embedding_dim: int,
                    dtype: str = EMBEDDING_DTYPE) -> np.ndarray:
    """Decode an ``embedding`` column into a (rows, dim) array without per-row copies."""
    return decode_latents(column, (embedding_dim,), dtype)
