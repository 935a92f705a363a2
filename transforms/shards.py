"""Latent rows to Parquet shard files in a staging folder.

Shards are sized by bytes (``target_shard_bytes``); a row's shard is a hash of its
clip id modulo the shard count, and rows inside a shard are sorted, so the same
inputs and configuration give the same files. Shards are written to staging and
published by ``transforms.publish`` only once the whole run has succeeded.
"""

from __future__ import annotations

import hashlib
import math

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas.elements import LatentRow, ShardFile
from schemas.latents import latent_schema

DEFAULT_TARGET_SHARD_BYTES = 256 * 1024**2
ROW_GROUP_BYTES = 64 * 1024**2
_COLUMNS = ("clip_id", "recording_id", "wearer_id", "view", "segment_index", "clip_index",
            "start_s", "end_s", "frame_count", "fps", "encoder_id", "encoder_pretrained",
            "embedding", "faces_redacted", "qa_status", "device_id", "location_cell", "pair_id")


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def _shard_of(clip_id: str, num_shards: int) -> int:
    return int(hashlib.sha256(clip_id.encode()).hexdigest()[:8], 16) % num_shards


def rows_to_table(rows: list[LatentRow], schema: pa.Schema) -> pa.Table:
    rows = sorted(rows, key=lambda r: (r.recording_id, r.view, r.segment_index, r.clip_index,
                                       r.clip_id))
    columns = {name: [getattr(r, name) for r in rows] for name in _COLUMNS}
    return pa.Table.from_pydict(columns, schema=schema)


class _WriteShardFn(beam.DoFn):
    def __init__(self, staging_dir: str, embedding_dim: int, file_metadata: dict) -> None:
        self._staging = staging_dir
        self._dim = embedding_dim
        self._meta = file_metadata

    def process(self, keyed):
        index, rows = keyed
        rows = list(rows)
        schema = latent_schema(self._dim, self._meta)
        table = rows_to_table(rows, schema)
        path = FileSystems.join(self._staging, shard_name(index))
        row_bytes = max(1, table.nbytes // max(1, table.num_rows))
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, row_group_size=max(1024, ROW_GROUP_BYTES // row_bytes),
                       compression="zstd", use_dictionary=["recording_id", "wearer_id", "view",
                                                           "encoder_id", "qa_status", "device_id",
                                                           "location_cell", "pair_id"],
                       write_statistics=True)
        data = sink.getvalue().to_pybytes()
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            handle.write(data)
        yield ShardFile(index=index, staging_path=path, rows=table.num_rows,
                        size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


class WriteLatentShards(beam.PTransform):
    """Latent rows -> ``ShardFile`` records of Parquet files written to ``staging_dir``.

    Args:
        staging_dir: where shards are written before publishing.
        embedding_dim: values per embedding (fixes the schema).
        file_metadata: run-level facts stored in every file's schema metadata.
        target_shard_bytes: approximate size of one shard.
    """

    def __init__(self, staging_dir: str, embedding_dim: int, file_metadata: dict,
                 target_shard_bytes: int = DEFAULT_TARGET_SHARD_BYTES) -> None:
        super().__init__()
        if target_shard_bytes <= 0:
            raise ValueError("target_shard_bytes must be positive")
        self._staging = staging_dir
        self._dim = embedding_dim
        self._meta = file_metadata
        self._target = target_shard_bytes

    def expand(self, rows):
        target = self._target
        num_shards = (rows
                      | "RowBytes" >> beam.Map(LatentRow.nbytes)
                      | "TotalBytes" >> beam.CombineGlobally(sum)
                      | "ShardCount" >> beam.Map(lambda total: max(1, math.ceil(total / target))))
        return (rows
                | "AssignShard" >> beam.Map(
                    lambda row, n: (_shard_of(row.clip_id, n), row),
                    n=beam.pvalue.AsSingleton(num_shards))
                | "GroupShards" >> beam.GroupByKey()
                | "WriteShard" >> beam.ParDo(_WriteShardFn(self._staging, self._dim, self._meta)))
