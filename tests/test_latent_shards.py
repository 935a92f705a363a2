"""Latent shards: the layout, writing, and every reader a trainer or analyst uses.

A small run is written through the real Beam transforms (WriteLatentShards, then
Publish) with known latent values, then read back by pyarrow, pandas, DuckDB,
Hugging Face ``datasets`` and the package's ``LatentShardDataset``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from apache_beam.testing.test_pipeline import TestPipeline

from pipeline.export.latent_dataset import LatentShardDataset, LatentShards, ShardsUnavailable
from schemas.elements import LatentRow
from schemas.latents import (
    DICTIONARY_COLUMNS,
    LATENT_COLUMNS,
    SCHEMA_VERSION,
    LatentLayout,
    decode_latents,
    latent_schema,
    numpy_dtype,
    row_group_rows,
    shard_metadata,
    writer_options,
)
from schemas.stages import PublishInputs
from tests.records import run_record
from transforms.publish import Publish
from transforms.stores.shards import file_sha256, rows_to_table, write_shard
from transforms.write_shards import WriteLatentShards

ROWS = 60
LAYOUT = LatentLayout(embedding_dim=8, dtype="float16", token_grid=(2, 2, 2), token_dim=4)


def _values(i: int, layout: LatentLayout) -> tuple[np.ndarray, np.ndarray]:
    dt = numpy_dtype(layout.dtype)
    emb = (np.arange(layout.embedding_dim) + i).astype(np.float32).astype(dt)
    tokens = np.full(layout.tokens_shape, i, np.float32).astype(dt)
    return emb, tokens


def _row(i: int, layout: LatentLayout = LAYOUT) -> LatentRow:
    emb, tokens = _values(i, layout)
    return LatentRow(clip_id=f"{i:032x}", recording_id=f"{i % 3:032x}", wearer_id=None,
                     view="rgb", segment_index=i // 10, clip_index=i % 10, start_s=float(i),
                     end_s=float(i) + 1, frame_count=8, fps=10.0, encoder_id="random:test",
                     encoder_pretrained=False, embedding=emb.tobytes(), faces_redacted=i % 2,
                     qa_status="redacted_unverified", tokens=tokens.tobytes())


def _publish(out: str, layout: LatentLayout, key_file: str, rows: int = ROWS) -> str:
    staging = os.path.join(out, ".staging", "run")
    meta = {"encoder_id": "random:test", "encoder_revision": None, "encoder_pretrained": False}
    with TestPipeline() as p:
        shards = (p | beam.Create([_row(i, layout) for i in range(rows)])
                  | WriteLatentShards(staging, layout, meta, target_shard_bytes=3000,
                                      row_group_bytes=700))
        nothing = [p | f"No{name}" >> beam.Create([]) for name in ("Files", "DL", "Events")]
        record = run_record(embedding_dim=layout.embedding_dim, latents=layout.describe())
        _ = PublishInputs(shards, *nothing, p | "Inputs" >> beam.Create([0])) | Publish(
            out, staging, record, key_file=key_file)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, key_file) -> str:
    return _publish(str(tmp_path_factory.mktemp("published")), LAYOUT, key_file)


def _listed(run_dir: str) -> list[str]:
    """The shards manifest.json lists: what every reader should open (README)."""
    return [f.path for f in LatentShards(run_dir).files]


def _index(clip_ids) -> list[int]:
    return [int(c, 16) for c in clip_ids]


def test_schema_carries_layout_encoder_and_version():
    schema = latent_schema(LAYOUT, {"encoder_id": "x", "encoder_revision": "abc",
                                    "encoder_pretrained": True})
    meta = shard_metadata(schema)
    assert meta["schema_version"] == SCHEMA_VERSION and meta["encoder_revision"] == "abc"
    assert meta["tokens"] == {"shape": [2, 2, 2, 4], "dtype": "float16"}
    assert LatentLayout.from_metadata(meta) == LAYOUT
    tokens = schema.field("tokens")
    assert tokens.type == pa.binary(2 * 2 * 2 * 4 * 2)
    assert json.loads(tokens.metadata[b"shape"]) == [2, 2, 2, 4]
    options = writer_options(schema)
    assert options["compression"]["tokens"] == "none" == options["compression"]["embedding"]
    assert "tokens" not in options["write_statistics"]
    with pytest.raises(ValueError, match="dtype"):
        LatentLayout(embedding_dim=8, dtype="float32")
    with pytest.raises(ValueError, match="token_dim"):
        LatentLayout(embedding_dim=8, token_grid=(1, 2, 2))


def test_bfloat16_round_trips_through_a_shard(tmp_path):
    layout = LatentLayout(embedding_dim=8, dtype="bfloat16", token_grid=(1, 2, 2), token_dim=4)
    path = str(tmp_path / "bf16.parquet")
    write_shard([_row(i, layout) for i in range(5)], latent_schema(layout), path, layout)
    table = pq.read_table(path)
    emb = decode_latents(table.column("embedding"), (8,), "bfloat16")
    assert emb.dtype.name == "bfloat16"
    order = _index(table.column("clip_id").to_pylist())
    expected = np.stack([_values(i, layout)[0] for i in order])
    assert sorted(order) == list(range(5)) and np.array_equal(emb.astype(np.float32), expected.astype(np.float32))


def test_shard_files_are_deterministic_and_grouped(tmp_path):
    rows = [_row(i) for i in range(30)]
    schema = latent_schema(LAYOUT, {"run": "x"})
    a, b = str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")
    write_shard(rows, schema, a, LAYOUT, row_group_bytes=1000)
    write_shard(list(reversed(rows)), schema, b, LAYOUT, row_group_bytes=1000)
    assert file_sha256(a) == file_sha256(b)
    meta = pq.ParquetFile(a).metadata
    per_group = 1000 // (LAYOUT.row_bytes + 160)
    assert meta.num_row_groups == -(-30 // per_group)
    column = meta.row_group(0).column(schema.get_field_index("tokens"))
    assert column.compression == "UNCOMPRESSED" and column.statistics is None


def _assert_measured_layout(meta: pq.FileMetaData, schema: pa.Schema) -> None:
    """Every row group in the layout of ``schemas.latents.writer_options``: latent chunks
    PLAIN, uncompressed, without dictionary or statistics; the small columns zstd, with
    statistics, and dictionaries where the settings ask for them."""
    assert meta.num_row_groups > 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for i, name in enumerate(schema.names):
            column = group.column(i)
            if name in LATENT_COLUMNS:
                assert column.physical_type == "FIXED_LEN_BYTE_ARRAY", name
                assert column.compression == "UNCOMPRESSED", name
                assert not column.has_dictionary_page and "PLAIN" in column.encodings, name
                assert not any("DICTIONARY" in e for e in column.encodings), name
                assert not column.is_stats_set and column.statistics is None, name
            else:
                assert column.compression == "ZSTD" and column.is_stats_set, name
                assert column.has_dictionary_page == (name in DICTIONARY_COLUMNS), name


def test_shards_are_pyarrows_files_in_the_measured_layout(tmp_path):
    """``write_shard`` streams row groups through pyarrow's writer: the file is the one
    ``pq.write_table`` writes from the same table with the same settings, and reads back
    the same values, schema and metadata."""
    rows = [_row(i) for i in range(30)]
    schema = latent_schema(LAYOUT, {"encoder_id": "random:test", "encoder_pretrained": False})
    path, reference = str(tmp_path / "shard.parquet"), str(tmp_path / "reference.parquet")
    assert write_shard(list(reversed(rows)), schema, path, LAYOUT, row_group_bytes=1000) == 30
    table = rows_to_table(rows, schema)
    per_group = row_group_rows(LAYOUT.row_bytes + 160, 1000)
    pq.write_table(table, reference, row_group_size=per_group, **writer_options(schema))

    written, expected = pq.read_table(path), pq.read_table(reference)
    assert written.equals(table) and written.equals(expected)
    assert written.schema.equals(schema, check_metadata=True)
    assert pq.read_schema(path).equals(pq.read_schema(reference), check_metadata=True)
    assert file_sha256(path) == file_sha256(reference)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == -(-30 // per_group)
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == \
        [min(per_group, 30 - s) for s in range(0, 30, per_group)]
    _assert_measured_layout(meta, schema)


def test_a_shard_that_fails_to_write_leaves_no_file(tmp_path):
    """A bad latent value in a later row group stops the write with no file left behind,
    rather than a valid shard that lacks rows."""
    rows = [_row(i) for i in range(30)]
    rows[-1] = dataclasses.replace(rows[-1], tokens=rows[-1].tokens[:-2])
    path = tmp_path / "shard.parquet"
    with pytest.raises(ValueError, match="tokens values are not 64 bytes each"):
        write_shard(rows, latent_schema(LAYOUT), str(path), LAYOUT, row_group_bytes=1000)
    assert not path.exists()


def test_manifest_lists_every_shard_with_rows_and_hash(run_dir):
    manifest = json.load(open(os.path.join(run_dir, "manifest.json")))
    shards = [f for f in manifest["files"] if f["kind"] == "latents"]
    assert [f["path"] for f in shards] == [f"latents/part-{i:05d}-{f['sha256'][:12]}.parquet"
                                           for i, f in enumerate(shards)]
    assert len(shards) >= 3 and sum(f["rows"] for f in shards) == ROWS
    for f in shards:
        assert file_sha256(os.path.join(run_dir, f["path"])) == f["sha256"]
        assert pq.ParquetFile(os.path.join(run_dir, f["path"])).metadata.num_row_groups > 1


def test_pyarrow_and_pandas_read_the_shards(run_dir):
    table = pq.read_table(_listed(run_dir))
    assert table.num_rows == ROWS
    emb = decode_latents(table.column("embedding"), (8,))
    order = _index(table.column("clip_id").to_pylist())
    assert np.array_equal(emb, np.stack([_values(i, LAYOUT)[0] for i in order]))

    first = glob.glob(os.path.join(run_dir, "latents", "part-00000-*.parquet"))[0]
    frame = pq.read_table(first).to_pandas()
    first = np.frombuffer(frame["tokens"].iloc[0], "<f2").reshape(2, 2, 2, 4)
    assert (first == int(frame["clip_id"].iloc[0], 16)).all()


def test_duckdb_reads_the_shards(run_dir):
    duckdb = pytest.importorskip("duckdb")
    files = _listed(run_dir)
    [(count, segments)] = duckdb.sql(
        f"SELECT count(*), count(DISTINCT segment_index) FROM read_parquet({files})").fetchall()
    assert (count, segments) == (ROWS, ROWS // 10)
    [(clip, blob)] = duckdb.sql(f"SELECT clip_id, embedding FROM read_parquet({files}) "
                                "WHERE clip_index = 3 AND segment_index = 2").fetchall()
    assert np.array_equal(np.frombuffer(blob, "<f2"), _values(int(clip, 16), LAYOUT)[0])


def test_hugging_face_datasets_loads_the_shards(run_dir, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ds = datasets.load_dataset("parquet", data_files=_listed(run_dir), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == ROWS
    row = ds[5]
    assert np.array_equal(np.frombuffer(row["embedding"], "<f2"),
                          _values(int(row["clip_id"], 16), LAYOUT)[0])


def test_dataset_streams_every_row_once_in_fixed_batches(run_dir):
    ds = LatentShardDataset(run_dir, columns=["clip_id", "embedding", "tokens"], batch_size=7)
    batches = list(ds)
    assert [len(b["clip_id"]) for b in batches] == [7] * (ROWS // 7) + [ROWS % 7]
    seen = []
    for batch in batches:
        assert batch["embedding"].dtype == torch.float16
        assert tuple(batch["tokens"].shape[1:]) == (2, 2, 2, 4)
        for clip, emb, tokens in zip(batch["clip_id"], batch["embedding"], batch["tokens"]):
            i = int(clip, 16)
            assert torch.equal(emb, torch.from_numpy(_values(i, LAYOUT)[0]))
            assert (tokens == i).all()
            seen.append(i)
    assert sorted(seen) == list(range(ROWS))


def test_dataset_batches_view_arrow_buffers(run_dir):
    ds = LatentShardDataset(run_dir, columns=["embedding", "segment_index"], batch_size=2,
                            as_torch=False)
    batch = next(iter(ds))
    base = batch["embedding"]
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, pa.Buffer)  # a view of the column Arrow decoded, not a copy
    assert batch["segment_index"].dtype == np.int32


def test_read_arrays_match_decoded_row_groups(run_dir):
    """``read_arrays`` (what the dataset reads) gives every column as ``decode`` gives
    the row group pyarrow reads."""
    shards = LatentShards(run_dir)
    for group in shards.row_groups():
        arrays = shards.read_arrays(group)
        decoded = shards.decode(shards.read_row_group(group))
        assert list(arrays) == list(decoded)
        for name, value in decoded.items():
            assert np.array_equal(arrays[name], value) if isinstance(value, np.ndarray) \
                else arrays[name] == value


def test_dataset_splits_ranks_and_workers_disjointly(run_dir):
    def ids(**kw):
        return [i for b in LatentShardDataset(run_dir, columns=["clip_id"], batch_size=4, **kw)
                for i in _index(b["clip_id"])]

    ranks = [ids(rank=r, world_size=3) for r in range(3)]
    assert sorted(sum(ranks, [])) == list(range(ROWS)) and all(ranks)
    loader = torch.utils.data.DataLoader(
        LatentShardDataset(run_dir, columns=["clip_id", "embedding"], batch_size=5),
        batch_size=None, num_workers=2)
    from_workers = [i for b in loader for i in _index(b["clip_id"])]
    assert sorted(from_workers) == list(range(ROWS))


def test_dataset_shuffles_by_seed_and_epoch(run_dir):
    ds = LatentShardDataset(run_dir, columns=["clip_id"], batch_size=None, shuffle=True, seed=1)
    first = [r["clip_id"] for r in ds]
    again = [r["clip_id"] for r in ds]
    ds.set_epoch(1)
    other = [r["clip_id"] for r in ds]
    assert first == again and first != other and sorted(first) == sorted(other)
    assert len(first) == ROWS and first != sorted(first)


def test_readers_trust_only_a_published_manifest(run_dir, tmp_path):
    shards = LatentShards(run_dir)
    shards.verify()
    assert shards.layout == LAYOUT and shards.metadata["encoder_pretrained"] is False
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(run_dir, copy)
    part = sorted(glob.glob(str(copy / "latents" / "*.parquet")))[0]
    with open(part, "r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00\x01")
    with pytest.raises(ShardsUnavailable, match=r"part-00000-[0-9a-f]{12}\.parquet does not match"):
        LatentShards(str(copy)).verify()
    os.remove(copy / "_SUCCESS")
    with pytest.raises(ShardsUnavailable, match="not published"):
        LatentShardDataset(str(copy))


def test_an_erasure_rewrite_keeps_the_latent_layout(tmp_path):
    """`egoveil erase` rewrites shards in the layout a run writes them."""
    from pipeline.erase import _rewritten_shard

    path = str(tmp_path / "s.parquet")
    schema = latent_schema(LAYOUT, {"encoder_id": "random:test"})
    write_shard([_row(i) for i in range(12)], schema, path, LAYOUT, row_group_bytes=1000)
    data = open(path, "rb").read()
    table = pq.read_table(path)
    out = pq.ParquetFile(pa.BufferReader(_rewritten_shard(data, table.slice(0, 7))))
    assert out.schema_arrow.equals(schema, check_metadata=True) and out.metadata.num_rows == 7
    group = out.metadata.row_group(0)
    for name in ("embedding", "tokens"):
        column = group.column(schema.get_field_index(name))
        assert column.compression == "UNCOMPRESSED" and column.statistics is None
    assert group.column(schema.get_field_index("segment_index")).statistics is not None
    _assert_measured_layout(out.metadata, schema)
    assert out.read().equals(table.slice(0, 7))
