"""The latent Parquet writer: the same bytes as pyarrow's writer, refusals, and its parts.

``transforms.stores.latent_parquet`` writes the latent columns' pages itself and splices
pyarrow's pages of the other columns around them. The strongest check there is: for
the shard layout, the file must be byte for byte what ``pyarrow.parquet.write_table``
writes with the same settings, for row sizes on each side of pyarrow's page limits.
"""

from __future__ import annotations

import dataclasses
import io
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.elements import LatentRow
from schemas.latents import (
    LATENT_ALIGN,
    LATENT_COLUMNS,
    LatentLayout,
    latent_buffer,
    latent_schema,
    writer_options,
)
from transforms.stores import thrift_compact
from transforms.stores.latent_parquet import (
    LatentParquetError,
    LatentParquetWriter,
    page_rows,
    read_latent_chunk,
    unwritten,
)
from transforms.stores.shards import row_group_rows, rows_to_table, shard_writer, write_shard


def _rows(layout: LatentLayout, n: int, seed: int = 0) -> list[LatentRow]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        emb = rng.standard_normal(layout.embedding_dim).astype(np.float16).tobytes()
        tokens = (rng.standard_normal(layout.token_bytes // 2).astype(np.float16).tobytes()
                  if layout.token_grid else None)
        out.append(LatentRow(
            clip_id=f"{i:032x}", recording_id=f"{i // 7:032x}", wearer_id=None if i % 3 else "w",
            view="rgb" if i % 2 else "left", segment_index=i // 5, clip_index=i % 5,
            start_s=i * 0.5, end_s=i * 0.5 + 2, frame_count=16, fps=30.0, encoder_id="random:t",
            encoder_pretrained=False, embedding=emb, faces_redacted=i % 4,
            qa_status="verified", device_id=None, location_cell="u0" if i % 5 else None,
            tokens=tokens))
    return out


def _pyarrow_bytes(table: pa.Table, row_group_size: int) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=row_group_size, **writer_options(table.schema))
    return sink.getvalue().to_pybytes()


def _ours_bytes(table: pa.Table, row_group_size: int) -> bytes:
    sink = io.BytesIO()
    with LatentParquetWriter(sink, table.schema, LATENT_COLUMNS,
                             **writer_options(table.schema)) as writer:
        writer.write_table(table, row_group_size)
    return sink.getvalue()


# Row sizes and counts that put pages on each side of pyarrow's limits: several rows a
# page capped at 20000 rows (16 B), 1024-row batches past 1 MB (2 KB), pages of many
# batches (600 B), one large row a page (64 KB tokens), several row groups each.
CASES = [
    (LatentLayout(8), 45_000, 21_000),
    (LatentLayout(1024), 2_600, 2_100),
    (LatentLayout(300), 5_000, 5_000),
    (LatentLayout(8, token_grid=(2, 4, 4), token_dim=1024), 9, 4),
]


@pytest.mark.parametrize("layout,rows,group", CASES, ids=["16B", "2KB", "600B", "64KB-tokens"])
def test_file_is_byte_for_byte_pyarrows(tmp_path, layout, rows, group):
    table = rows_to_table(_rows(layout, rows), latent_schema(layout, {"encoder_id": "t"}))
    expected = _pyarrow_bytes(table, group)
    assert _ours_bytes(table, group) == expected
    path = tmp_path / "shard.parquet"  # through a file descriptor and os.writev too
    with LatentParquetWriter(str(path), table.schema, LATENT_COLUMNS,
                             **writer_options(table.schema)) as writer:
        writer.write_table(table, group)
    assert path.read_bytes() == expected
    assert pq.read_table(path).equals(table)


def test_write_shard_from_rows_writes_the_tables_file(tmp_path):
    """The shipped path: rows handed over one bytes object each (64 KB rows) or joined,
    give the file that the table gives."""
    for layout in (LatentLayout(1024), CASES[-1][0]):
        rows = _rows(layout, 40)
        schema = latent_schema(layout, {"encoder_id": "t"})
        path = tmp_path / "shard.parquet"
        write_shard(rows, schema, str(path), layout, row_group_bytes=200_000)
        sink = io.BytesIO()
        with shard_writer(sink, schema) as writer:
            writer.write_table(rows_to_table(rows, schema),
                               row_group_rows(layout.row_bytes + 160, 200_000))
        assert path.read_bytes() == sink.getvalue()


@pytest.mark.parametrize("layout,rows,group", CASES, ids=["16B", "2KB", "600B", "64KB-tokens"])
def test_aligned_shards_read_back_everywhere(tmp_path, layout, rows, group):
    """Shards put each latent chunk's values on a 64-byte offset, in one page; pyarrow,
    DuckDB and the direct reader read back the table."""
    table = rows_to_table(_rows(layout, rows), latent_schema(layout, {"encoder_id": "t"}))
    path = tmp_path / "aligned.parquet"
    with shard_writer(str(path), table.schema) as writer:
        writer.write_table(table, group)
    assert pq.read_table(path).equals(table)
    data = path.read_bytes()
    meta = pq.ParquetFile(path).metadata
    with open(path, "rb", buffering=0) as raw:
        for g in range(meta.num_row_groups):
            for name in LATENT_COLUMNS[:1 + bool(layout.token_grid)]:
                c = table.schema.get_field_index(name)
                chunk = meta.row_group(g).column(c)
                header, values_at = thrift_compact.decode(data, chunk.data_page_offset)
                assert values_at % LATENT_ALIGN == 0  # one page, its values aligned
                assert header.get(5).get(1) == chunk.num_values
                expected = pq.read_table(path, columns=[name]).column(name).chunk(g)
                got = read_latent_chunk(raw, meta, g, c)
                assert got.to_pybytes() == latent_buffer(expected)[0].to_pybytes()
    duckdb = pytest.importorskip("duckdb")
    [(count, first)] = duckdb.sql(f"SELECT count(*), min(clip_id) FROM '{path}'").fetchall()
    assert count == rows and first == table.column("clip_id")[0].as_py()


def test_direct_reads_fall_back_for_chunks_stored_otherwise(tmp_path):
    layout = LatentLayout(1024)
    table = rows_to_table(_rows(layout, 3000), latent_schema(layout))
    pyarrow_cut = tmp_path / "pyarrow.parquet"  # pyarrow's pages: read page by page
    pq.write_table(table, pyarrow_cut, row_group_size=2500, **writer_options(table.schema))
    zstd = tmp_path / "zstd.parquet"  # compressed: left to pyarrow
    pq.write_table(table, zstd, row_group_size=2500, compression="zstd")
    index = table.schema.get_field_index("embedding")
    with open(pyarrow_cut, "rb", buffering=0) as raw:
        got = read_latent_chunk(raw, pq.ParquetFile(pyarrow_cut).metadata, 1, index)
    assert got.to_pybytes() == latent_buffer(table.column("embedding").slice(2500))[0] \
        .to_pybytes()[2500 * 2048:]
    with open(zstd, "rb", buffering=0) as raw:
        assert read_latent_chunk(raw, pq.ParquetFile(zstd).metadata, 0, index) is None


def test_latent_columns_only_and_empty_files_match_pyarrow():
    schema = pa.schema([pa.field("x", pa.binary(4), nullable=False)], metadata={b"k": b"v"})
    table = pa.table({"x": pa.array([b"abcd", b"efgh", b"ijkl"], pa.binary(4))}, schema=schema)
    options = {"compression": "none", "use_dictionary": False, "write_statistics": False}

    def both(tab, group):
        sink = pa.BufferOutputStream()
        with pq.ParquetWriter(sink, schema, **options) as writer:
            if tab is not None:
                writer.write_table(tab, row_group_size=group)
        ours = io.BytesIO()
        with LatentParquetWriter(ours, schema, ["x"], **options) as writer:
            if tab is not None:
                writer.write_table(tab, group)
        return ours.getvalue(), sink.getvalue().to_pybytes()

    ours, theirs = both(table, 2)
    assert ours == theirs and pq.read_table(io.BytesIO(ours)).equals(table)
    ours, theirs = both(None, 1)
    assert ours == theirs and pq.read_table(io.BytesIO(ours)).num_rows == 0


def test_bad_values_and_settings_are_refused(tmp_path):
    layout = LatentLayout(4)
    schema = latent_schema(layout)
    rows = _rows(layout, 3)
    short = [rows[0], dataclasses.replace(rows[1], embedding=b"\0" * 6)]
    with pytest.raises(ValueError, match="not 8 bytes"):
        write_shard(short, schema, str(tmp_path / "a.parquet"), layout)
    # A shard cut short by an error has no footer: it reads as no Parquet file at all.
    with pytest.raises(pa.ArrowInvalid):
        pq.read_table(tmp_path / "a.parquet")
    with pytest.raises(LatentParquetError, match="non-nullable"):
        LatentParquetWriter(io.BytesIO(), pa.schema([("embedding", pa.binary(8))]),
                            LATENT_COLUMNS)
    with pytest.raises(LatentParquetError, match="write_page_index"):
        LatentParquetWriter(io.BytesIO(), schema, LATENT_COLUMNS, write_page_index=True)
    writer = LatentParquetWriter(io.BytesIO(), schema, LATENT_COLUMNS, **writer_options(schema))
    small = rows_to_table(rows, schema).drop_columns(["embedding"])
    with pytest.raises(LatentParquetError, match="3 rows of 8 bytes"):
        writer.write_rows(small, {"embedding": [b"\0" * 8, b"\0" * 15]})


def test_page_rows_follow_pyarrows_limits():
    assert page_rows(45_000, 2) == [20_000, 20_000, 5_000]
    assert page_rows(2_600, 2_048) == [1024, 1024, 552]
    assert page_rows(5_000, 600) == [2048, 2048, 904]
    assert page_rows(3, 1 << 20) == [3]
    assert page_rows(0, 8) == []


def test_short_writes_resume_where_they_stopped():
    views = [memoryview(b"abc"), memoryview(b"de"), memoryview(b"fgh")]
    assert [bytes(v) for v in unwritten(views, 0)] == [b"abc", b"de", b"fgh"]
    assert [bytes(v) for v in unwritten(views, 4)] == [b"e", b"fgh"]
    assert [bytes(v) for v in unwritten(views, 5)] == [b"fgh"]
    assert unwritten(views, 8) == []


def test_thrift_codec_round_trips_a_pyarrow_footer():
    layout = CASES[-1][0]
    table = rows_to_table(_rows(layout, 6), latent_schema(layout, {"encoder_id": "t"}))
    data = _pyarrow_bytes(table, 4)
    (length,) = struct.unpack("<i", data[-8:-4])
    footer = data[-8 - length:-8]
    meta, end = thrift_compact.decode(footer)
    assert end == length and thrift_compact.encode(meta) == footer
    assert meta.get(3) == 6 and meta.get(6).startswith(b"parquet-cpp-arrow")
    with pytest.raises(thrift_compact.ThriftError, match="truncated"):
        thrift_compact.decode(footer[:-3])
