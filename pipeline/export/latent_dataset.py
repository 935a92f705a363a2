"""Reading a published run's latent shards: row groups to arrays, and a PyTorch dataset.

This is the trainer's side of the shard format. It lives in ``pipeline/`` because it
reads what a run published (the manifest, then the shards it lists) and needs torch,
but it imports no Beam, so a training job imports it cheaply. Decoding a column is
``schemas.latents``' business; this module finds the row groups, spreads them over
ranks and DataLoader workers, and hands out numpy arrays or torch tensors that view
Arrow's buffers: no row is ever copied on its own.

    from pipeline.export.latent_dataset import LatentShardDataset
    ds = LatentShardDataset("run/", columns=["embedding", "tokens"], batch_size=64)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=4)
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from schemas.latents import (
    LATENT_COLUMNS,
    LatentLayout,
    decode_latents,
    shard_metadata,
)

MANIFEST = "manifest.json"  # written by transforms.publish, after every shard
SUCCESS = "_SUCCESS"


class ShardsUnavailable(RuntimeError):
    """The run is not published, or a shard does not match its manifest entry."""


@dataclass(slots=True, frozen=True)
class ShardFile:
    """One shard as the manifest lists it."""

    path: str
    rows: int
    sha256: str
    size_bytes: int


@dataclass(slots=True, frozen=True)
class RowGroup:
    """The unit of reading and of sharding over workers."""

    file: int
    index: int
    rows: int


def _join(root: str, rel: str) -> str:
    return f"{root.rstrip('/')}/{rel}" if "://" in root else os.path.join(root, rel)


def _open_input(path: str):
    if "://" not in path:
        # Memory-mapped: pyarrow decodes the uncompressed latent pages straight from the
        # page cache, with no read into a buffer of its own first (bench/shards.py).
        return pa.memory_map(path)
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(path)
    return filesystem.open_input_file(inner)


def _read_bytes(path: str) -> bytes:
    with _open_input(path) as handle:
        return handle.read()


class LatentShards:
    """The latent shards of one published run, read through its manifest.

    Readers trust only the manifest (PRIVACY.md 18): files it does not list are
    never opened, and a run without ``_SUCCESS`` is not read at all.

    Args:
        root: the run's output folder (local, or a URI pyarrow's filesystems open).

    Raises:
        ShardsUnavailable: the run has not been published.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        try:
            _read_bytes(_join(root, SUCCESS))
            manifest = json.loads(_read_bytes(_join(root, MANIFEST)))
        except (OSError, FileNotFoundError, ValueError) as exc:
            raise ShardsUnavailable("the run is not published (no _SUCCESS or manifest.json); "
                                    "read only runs that finished") from exc
        self.manifest = manifest
        self.files = [ShardFile(path=_join(root, f["path"]), rows=int(f["rows"]),
                                sha256=f["sha256"], size_bytes=int(f["bytes"]))
                      for f in manifest["files"] if f.get("kind") == "latents"]
        self._parquet: dict[int, pq.ParquetFile] = {}
        self._meta: dict | None = None

    @property
    def num_rows(self) -> int:
        return sum(f.rows for f in self.files)

    def parquet(self, file: int) -> pq.ParquetFile:
        """The opened shard ``file`` (kept open for further row groups)."""
        if file not in self._parquet:
            self._parquet[file] = pq.ParquetFile(_open_input(self.files[file].path),
                                                 pre_buffer=False)
        return self._parquet[file]

    @property
    def metadata(self) -> dict:
        """The ``egoveil`` file metadata (schema version, encoder, layout) of the run."""
        if self._meta is None:
            if not self.files:
                raise ShardsUnavailable("the run published no latent shards")
            self._meta = shard_metadata(self.parquet(0).schema_arrow)
        return self._meta

    @property
    def layout(self) -> LatentLayout:
        return LatentLayout.from_metadata(self.metadata)

    def row_groups(self) -> list[RowGroup]:
        """Every row group of every shard, in manifest order (reads the footers)."""
        groups = []
        for number in range(len(self.files)):
            meta = self.parquet(number).metadata
            groups.extend(RowGroup(number, i, meta.row_group(i).num_rows)
                          for i in range(meta.num_row_groups))
        return groups

    def read_row_group(self, group: RowGroup, columns: Sequence[str] | None = None) -> pa.Table:
        return self.parquet(group.file).read_row_group(group.index, columns=columns,
                                                       use_threads=False)

    def read_arrays(self, group: RowGroup, columns: Sequence[str] | None = None) -> dict:
        """One row group's columns (all by default), read by pyarrow and decoded as
        ``decode`` gives them: latent columns as arrays that view Arrow's buffers."""
        return self.decode(self.read_row_group(group, columns))

    @staticmethod
    def _shape(layout: LatentLayout, name: str) -> tuple[int, ...]:
        return layout.tokens_shape if name == "tokens" else (layout.embedding_dim,)

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """Every row of the run as one table (for small runs and analysis)."""
        tables = [self.parquet(i).read(columns=columns, use_threads=False)
                  for i in range(len(self.files))]
        return pa.concat_tables(tables) if tables else pa.table({})

    def verify(self) -> None:
        """Check every shard's size and sha256 against the manifest.

        Raises:
            ShardsUnavailable: naming the first shard (by its manifest path) that differs.
        """
        for f in self.files:
            digest, size = hashlib.sha256(), 0
            with _open_input(f.path) as handle:
                while block := handle.read(8 << 20):
                    digest.update(block)
                    size += len(block)
            if size != f.size_bytes or digest.hexdigest() != f.sha256:
                rel = os.path.relpath(f.path, self.root) if "://" not in f.path else f.path
                raise ShardsUnavailable(f"{rel} does not match its manifest entry")

    def decode(self, table: pa.Table) -> dict[str, np.ndarray | list]:
        """A table's columns as arrays: latents (rows, *shape), numbers as numpy views,
        strings as lists."""
        layout = self.layout
        out: dict[str, np.ndarray | list] = {}
        for name in table.column_names:
            column = table.column(name)
            if name in LATENT_COLUMNS:
                out[name] = decode_latents(column, self._shape(layout, name), layout.dtype)
            elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                out[name] = column.to_pylist()
            else:
                out[name] = column.to_numpy()
        return out


def _to_torch(value):
    if not isinstance(value, np.ndarray) or value.dtype == object:
        return value
    with warnings.catch_warnings():
        # Arrow's buffers are read-only to numpy; the tensors share them, unchanged.
        warnings.simplefilter("ignore", UserWarning)
        if value.dtype.name == "bfloat16":
            return torch.from_numpy(value.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(value)


def _take(batch: dict, index) -> dict:
    return {k: (v[index] if isinstance(v, np.ndarray) else
                ([v[i] for i in index] if not isinstance(index, slice) else v[index]))
            for k, v in batch.items()}


def _concat(parts: list[dict]) -> dict:
    if len(parts) == 1:
        return parts[0]
    return {k: (np.concatenate([p[k] for p in parts]) if isinstance(parts[0][k], np.ndarray)
                else [x for p in parts for x in p[k]]) for k in parts[0]}


def _rows(batch: dict) -> int:
    return len(next(iter(batch.values())))


class LatentShardDataset(IterableDataset):
    """Streams a run's latents as batches, split over ranks and DataLoader workers.

    Row groups are the unit of work: each (rank, worker) pair takes every n-th row
    group, so workers read disjoint parts of the shards. Each row group is read once
    and cut into batches that view its buffers; a batch that spans two row groups is
    joined with one bulk copy. Use it with ``DataLoader(ds, batch_size=None)``.

    Args:
        root: a published run's output folder.
        columns: columns to read (``embedding``, ``tokens`` and any scalar column).
        batch_size: rows per batch; None yields single rows (views, no copies).
        shuffle: shuffle row groups, and rows within each, anew each epoch (``set_epoch``).
        seed: base seed of the shuffle; every rank must use the same.
        rank, world_size: this process's place in distributed training (default:
            ``torch.distributed`` when initialised, else 0 of 1).
        drop_last: drop each worker's last, smaller batch.
        as_torch: tensors instead of numpy arrays.
    """

    def __init__(self, root: str, columns: Sequence[str] = ("embedding",),
                 batch_size: int | None = 256, shuffle: bool = False, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None,
                 drop_last: bool = False, as_torch: bool = True) -> None:
        super().__init__()
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.root = root
        self.columns = list(columns)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.as_torch = as_torch
        if rank is None or world_size is None:
            dist = torch.distributed
            ready = dist.is_available() and dist.is_initialized()
            rank = dist.get_rank() if ready else 0
            world_size = dist.get_world_size() if ready else 1
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        shards = LatentShards(root)
        missing = set(self.columns) - set(shards.parquet(0).schema_arrow.names) \
            if shards.files else set()
        if missing:
            raise ValueError(f"the shards have no column {sorted(missing)[0]!r}")
        self._groups = shards.row_groups()
        self.num_rows = shards.num_rows

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for a new epoch (call on every rank before iterating)."""
        self.epoch = epoch

    def _my_groups(self) -> tuple[list[RowGroup], np.random.Generator]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        order = list(self._groups)
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            order = [order[i] for i in rng.permutation(len(order))]
        total, me = self.world_size * workers, self.rank * workers + worker
        mine = order[me::total]
        return mine, np.random.default_rng([self.seed, self.epoch, me])

    def __iter__(self) -> Iterator[dict]:
        shards = LatentShards(self.root)
        groups, rng = self._my_groups()
        pending: list[dict] = []
        size = self.batch_size
        for group in groups:
            batch = shards.read_arrays(group, self.columns)
            n = _rows(batch)
            if self.shuffle:
                batch = _take(batch, rng.permutation(n))
            if size is None:
                for i in range(n):
                    yield self._out(_take(batch, slice(i, i + 1)), single=True)
                continue
            start = 0
            if pending:
                need = size - sum(_rows(p) for p in pending)
                pending.append(_take(batch, slice(0, need)))
                start = min(need, n)
                if sum(_rows(p) for p in pending) < size:
                    continue
                yield self._out(_concat(pending))
                pending = []
            while start + size <= n:
                yield self._out(_take(batch, slice(start, start + size)))
                start += size
            if start < n:
                pending = [_take(batch, slice(start, n))]
        if pending and not self.drop_last:
            yield self._out(_concat(pending))

    def _out(self, batch: dict, single: bool = False) -> dict:
        if single:
            batch = {k: v[0] for k, v in batch.items()}
        return {k: _to_torch(v) for k, v in batch.items()} if self.as_torch else batch
