"""The shard-writing stage: latent rows grouped into shards and written to staging.

Shards are sized by bytes (``target_shard_bytes``); a row's shard is a hash of its
clip id modulo the shard count, and rows inside a shard are sorted, so the same
inputs and configuration give the same files. The file format is
``transforms.stores.shards``'; shards are published by ``transforms.publish``
only once the whole run has succeeded.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas.elements import LatentRow, ShardFile
from schemas.latents import ROW_GROUP_BYTES, LatentLayout, latent_schema
from transforms.stores.shards import (
    DEFAULT_TARGET_SHARD_BYTES,
    file_sha256,
    shard_name,
    shard_of,
    write_shard,
)

_CHUNK = 8 * 1024**2


class _WriteShardFn(beam.DoFn):
    def __init__(self, staging_dir: str, layout: LatentLayout, file_metadata: dict,
                 row_group_bytes: int) -> None:
        self._staging = staging_dir
        self._layout = layout
        self._meta = file_metadata
        self._group = row_group_bytes

    def process(self, keyed):
        index, rows = keyed
        schema = latent_schema(self._layout, self._meta)
        path = FileSystems.join(self._staging, shard_name(index))
        if "://" not in path:  # local staging: write the file in place
            os.makedirs(os.path.dirname(path), exist_ok=True)
            count = write_shard(list(rows), schema, path, self._layout, self._group)
            yield ShardFile(index=index, staging_path=path, rows=count,
                            size_bytes=os.path.getsize(path), sha256=file_sha256(path))
            return
        with tempfile.TemporaryDirectory(prefix="egoveil-shard-") as tmp:
            local = os.path.join(tmp, shard_name(index))
            count = write_shard(list(rows), schema, local, self._layout, self._group)
            with open(local, "rb") as src, FileSystems.create(
                    path, compression_type=CompressionTypes.UNCOMPRESSED) as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            yield ShardFile(index=index, staging_path=path, rows=count,
                            size_bytes=os.path.getsize(local), sha256=file_sha256(local))


class WriteLatentShards(beam.PTransform):
    """Latent rows -> ``ShardFile`` records of Parquet files written to ``staging_dir``.

    Args:
        staging_dir: where shards are written before publishing.
        layout: the latent columns' layout (or the embedding size, float16, no tokens).
        file_metadata: run-level facts stored in every file's schema metadata.
        target_shard_bytes: approximate size of one shard.
        row_group_bytes: approximate size of one row group.
    """

    def __init__(self, staging_dir: str, layout: LatentLayout | int, file_metadata: dict,
                 target_shard_bytes: int = DEFAULT_TARGET_SHARD_BYTES,
                 row_group_bytes: int = ROW_GROUP_BYTES) -> None:
        super().__init__()
        if target_shard_bytes <= 0 or row_group_bytes <= 0:
            raise ValueError("target_shard_bytes and row_group_bytes must be positive")
        self._group = row_group_bytes
        self._staging = staging_dir
        self._layout = layout if isinstance(layout, LatentLayout) else LatentLayout(int(layout))
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
                    lambda row, n: (shard_of(row.clip_id, n), row),
                    n=beam.pvalue.AsSingleton(num_shards))
                | "GroupShards" >> beam.GroupByKey()
                | "WriteShard" >> beam.ParDo(_WriteShardFn(self._staging, self._layout,
                                                           self._meta, self._group)))
