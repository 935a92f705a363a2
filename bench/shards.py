"""Shard write and read throughput per core, against pyarrow writing and reading the raw bytes.

Shards are written by pyarrow's Parquet writer and read by its reader; this measures
what that costs against moving the same bytes raw. For each candidate layout of the
latent columns, writes the same latent payload (one shard's worth, 256 MB by default)
as Parquet with ``pq.write_table`` and reads it back (``pq.read_table``, memory-mapped)
into one (rows, ...) numpy array, on one core (pyarrow's CPU and I/O pools set to one
thread, ``use_threads=False``), timed in CPU seconds of the process. The baseline is
pyarrow writing the same bytes to a file as one buffer (``pa.OSFile.write``) and
reading them back into one buffer (``read_buffer``).
Runs are interleaved (raw, layout, raw, layout, ...) and the ratio is taken per
repetition, so a noisy neighbour slows both sides of a ratio alike; medians are
reported. All writes of a layout run before its reads; reads come from the page
cache, as the writes just put them there.

Then the shipped path end to end: a whole shard (the small columns too) written by
``transforms.stores.shards.shard_writer`` from an Arrow table, ``write_shard`` from
``LatentRow`` objects (building the columns included), and the reader
``pipeline.export.latent_dataset.LatentShards`` (row group by row group, decoded to
arrays), with the sha256 the manifest needs timed on its own; and the shipped reader
over several row-group sizes.

Usage:
    python bench/shards.py [--mb 256] [--repeat 5] [--workload pooled|tokens|both]

Results go to bench/results/shards.json, their tables to bench/results/shards_tables.md;
bench/results/shards.md discusses them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pipeline.export.latent_dataset import LatentShards  # noqa: E402
from schemas.elements import LatentRow  # noqa: E402
from schemas.latents import (  # noqa: E402
    ROW_GROUP_BYTES,
    LatentLayout,
    decode_latents,
    latent_schema,
    row_group_rows,
)
from transforms.stores.shards import (  # noqa: E402
    file_sha256,
    rows_to_table,
    shard_writer,
    write_shard,
)

# What a row holds: V-JEPA 2 ViT-L's pooled embedding (1024), and with it its 8x16x16
# token grid pooled to 8x8x8 (512 tokens of 1024), both float16.
WORKLOADS = {
    "pooled": LatentLayout(embedding_dim=1024),
    "tokens": LatentLayout(embedding_dim=1024, token_grid=(8, 8, 8), token_dim=1024),
}


def _timed(fn) -> float:
    """CPU seconds of the process (user + system, every thread, so page faults, copies into
    the page cache and work pyarrow hands to its one-thread pools all count): throughput
    per core, robust to neighbours on a shared machine."""
    cpu = time.process_time()
    fn()
    return time.process_time() - cpu


def _raw_reader(path: str, nbytes: int):
    """Raw read: pyarrow reads the file's bytes into a new buffer (``read_buffer``).

    Measured here, that is the fastest raw read (about 8 GB/s per core, against about
    2.7 for ``readinto`` a numpy array allocated beforehand: Arrow's allocator hands out
    memory that the kernel copies into faster on this VM), so it is the strict baseline."""

    def read():
        with pa.OSFile(path) as handle:
            assert handle.read_buffer().size == nbytes

    return read


def _column(kind: str, buf: pa.Buffer, rows: int, width: int) -> pa.Array:
    """The payload as one Arrow column of the given layout, without copying it."""
    if kind.startswith("fixed_size_binary"):
        return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), rows, [None, buf])
    if kind.startswith("binary"):
        offsets = pa.py_buffer((np.arange(rows + 1, dtype=np.int32) * width).tobytes())
        return pa.Array.from_buffers(pa.binary(), rows, [None, offsets, buf])
    if kind.startswith("fixed_size_list<float16>"):
        values = pa.Array.from_buffers(pa.float16(), rows * width // 2, [None, buf])
        return pa.FixedSizeListArray.from_arrays(values, width // 2)
    raise ValueError(kind)


def _decode(kind: str, column: pa.ChunkedArray, width: int) -> list[np.ndarray]:
    """Each chunk (row group) of the column as a (rows, width // 2) float16 array."""
    out = []
    for chunk in column.chunks:
        rows = len(chunk)
        if kind.startswith("fixed_size_binary"):
            out.append(decode_latents(chunk, (width // 2,)))
        elif kind.startswith("binary"):
            offsets = np.frombuffer(chunk.buffers()[1], np.int32, count=1, offset=4 * chunk.offset)
            start = int(offsets[0])
            out.append(np.frombuffer(chunk.buffers()[2], np.float16, count=rows * width // 2,
                                     offset=start).reshape(rows, -1))
        else:
            out.append(chunk.flatten().to_numpy().reshape(rows, -1))
    return out


LAYOUTS = {  # name: (kind, compression); all without dictionary or statistics
    "fixed_size_binary": ("fixed_size_binary", "none"),  # the shipped layout
    "fixed_size_binary+zstd": ("fixed_size_binary", "zstd"),
    "binary": ("binary", "none"),
    "fixed_size_list<float16>": ("fixed_size_list<float16>", "none"),
}


def compare_layouts(tmp: str, payload: np.ndarray, rows: int, width: int, repeat: int,
                    layouts: list[str]) -> dict:
    buf = pa.py_buffer(payload)
    raw_path, pq_path = os.path.join(tmp, "raw.bin"), os.path.join(tmp, "layout.parquet")

    def raw_write():
        with pa.OSFile(raw_path, "wb") as handle:
            handle.write(buf)

    raw_read = _raw_reader(raw_path, payload.nbytes)

    results = {}
    for name in layouts:
        results[name] = _one_layout(name, buf, payload, rows, width, repeat, pq_path,
                                    raw_write, raw_read)
    return results


def _one_layout(name, buf, payload, rows, width, repeat, pq_path, raw_write, raw_read) -> dict:
    kind, compression = LAYOUTS[name]
    column = _column(kind, buf, rows, width)
    table = pa.Table.from_arrays([column], schema=pa.schema([pa.field("x", column.type, False)]))
    nbytes = buf.size
    out = {}
    options = {"compression": compression, "use_dictionary": False, "write_statistics": False}

    def write():
        pq.write_table(table, pq_path, row_group_size=row_group_rows(width), **options)

    def read():
        out.pop("arr", None)
        before = pa.total_allocated_bytes()
        got = pq.read_table(pq_path, use_threads=False, memory_map=True, pre_buffer=False)
        out["arr"] = _decode(kind, got.column("x"), width)
        out["allocated"] = pa.total_allocated_bytes() - before

    w, r = [], []
    # Writes, then reads: a read right after a write finds the allocator in the state the
    # write left it (256 MB freed), which swung the raw read between 1.3 and 11 GB/s.
    for _ in range(repeat):
        w.append((_timed(raw_write), _timed(write)))
    for _ in range(repeat):
        r.append((_timed(raw_read), _timed(read)))
    expected = payload.view(np.uint16).reshape(rows, -1)
    assert np.array_equal(np.concatenate(out.pop("arr")).view(np.uint16), expected), name
    result = _summary(nbytes, w, r, os.path.getsize(pq_path))
    # Share of the payload that the read copied out of the memory map into Arrow memory:
    # 1.0 means the arrays are materialized, not lazily mapped.
    result["read_materialized_share"] = round(out["allocated"] / nbytes, 3)
    return result


def _summary(nbytes: int, writes: list, reads: list, file_bytes: int) -> dict:
    def gbps(t):
        return round(nbytes / t / 1e9, 3)

    return {
        "write_gbps": gbps(statistics.median(t for _, t in writes)),
        "raw_write_gbps": gbps(statistics.median(t for t, _ in writes)),
        "write_ratio": round(statistics.median(raw / ours for raw, ours in writes), 3),
        "read_gbps": gbps(statistics.median(t for _, t in reads)),
        "raw_read_gbps": gbps(statistics.median(t for t, _ in reads)),
        "read_ratio": round(statistics.median(raw / ours for raw, ours in reads), 3),
        # Against the fastest raw repetition: the raw read's speed depends on the state of
        # the allocator (fresh pages or reused ones), so this is the strict ratio.
        "write_vs_best_raw": round(min(t for t, _ in writes)
                                   / statistics.median(t for _, t in writes), 3),
        "read_vs_best_raw": round(min(t for t, _ in reads)
                                  / statistics.median(t for _, t in reads), 3),
        "file_over_payload": round(file_bytes / nbytes, 4),
    }


def _rows(layout: LatentLayout, n: int, payload: np.ndarray) -> list[LatentRow]:
    flat = payload.view(np.uint8).reshape(n, -1)
    e = layout.embedding_bytes
    return [LatentRow(clip_id=f"{i:032x}", recording_id=f"{i // 64:032x}", wearer_id=None,
                      view="rgb", segment_index=i // 8, clip_index=i % 8, start_s=i * 1.0,
                      end_s=i + 1.0, frame_count=16, fps=30.0, encoder_id="random:vjepa2-vitl",
                      encoder_pretrained=False, embedding=flat[i, :e].tobytes(),
                      faces_redacted=0, qa_status="redacted_unverified",
                      tokens=flat[i, e:].tobytes() if layout.token_grid else None)
            for i in range(n)]


SHARD = "latents/part-00000.parquet"


def _publish(run: str, rows: int) -> None:
    """Make ``run`` a published run of its one shard, as ``LatentShards`` reads runs."""
    shard = os.path.join(run, SHARD)
    manifest = {"files": [{"path": SHARD, "kind": "latents", "rows": rows,
                           "sha256": file_sha256(shard), "bytes": os.path.getsize(shard)}]}
    with open(os.path.join(run, "manifest.json"), "w") as handle:
        json.dump(manifest, handle)
    open(os.path.join(run, "_SUCCESS"), "w").close()


def _latent_columns(layout: LatentLayout) -> list[str]:
    return ["embedding", "tokens"] if layout.token_grid else ["embedding"]


def _check_read(run: str, layout: LatentLayout, items: list[LatentRow],
                payload: np.ndarray) -> None:
    """The shipped reader gives back the payload, row for row (outside the timing)."""
    shards = LatentShards(run)
    got = [shards.read_arrays(g, ["clip_id", *_latent_columns(layout)])
           for g in shards.row_groups()]
    order = [int(c, 16) for part in got for c in part["clip_id"]]
    flat = payload.view(np.uint16).reshape(len(items), -1)[order]
    parts = [np.concatenate([part[c].reshape(len(part["clip_id"]), -1)
                             for c in _latent_columns(layout)], axis=1) for part in got]
    assert np.array_equal(np.concatenate(parts).view(np.uint16), flat), "read back differs"


def shipped_path(tmp: str, layout: LatentLayout, payload: np.ndarray, rows: int,
                 repeat: int) -> dict:
    """write_shard from LatentRows and LatentShards reading into arrays, against raw."""
    nbytes = payload.nbytes
    items = _rows(layout, rows, payload)
    schema = latent_schema(layout, {"encoder_id": "random:vjepa2-vitl"})
    run = os.path.join(tmp, "run")
    os.makedirs(os.path.join(run, "latents"), exist_ok=True)
    shard = os.path.join(run, SHARD)
    raw_path = os.path.join(tmp, "raw.bin")
    buf = pa.py_buffer(payload)

    def raw_write():
        with pa.OSFile(raw_path, "wb") as handle:
            handle.write(buf)

    raw_read = _raw_reader(raw_path, nbytes)

    def write():
        write_shard(items, schema, shard, layout)

    table = rows_to_table(items, schema)
    per_group = row_group_rows(layout.row_bytes + 160)

    def write_table():
        with shard_writer(shard, schema) as writer:
            writer.write_table(table, per_group)

    write_table()
    from_table = file_sha256(shard)
    write()
    assert file_sha256(shard) == from_table, "write_shard and shard_writer wrote different files"
    _publish(run, rows)
    columns = _latent_columns(layout)

    def read():
        shards = LatentShards(run)
        for group in shards.row_groups():
            shards.read_arrays(group, columns)

    _check_read(run, layout, items, payload)

    w, r, h, t = [], [], [], []
    for _ in range(repeat):  # writes, then reads, as in _one_layout
        t.append((_timed(raw_write), _timed(write_table)))
        w.append((_timed(raw_write), _timed(write)))
    for _ in range(repeat):
        r.append((_timed(raw_read), _timed(read)))
        h.append(_timed(lambda: hashlib.sha256(buf).digest()))
    out = _summary(nbytes, w, r, os.path.getsize(shard))
    out["row_groups"] = pq.ParquetFile(shard).metadata.num_row_groups
    table_write = _summary(nbytes, t, r, os.path.getsize(shard))
    out["table_write_gbps"] = table_write["write_gbps"]
    out["table_write_ratio"] = table_write["write_ratio"]
    out["table_write_vs_best_raw"] = table_write["write_vs_best_raw"]
    out["sha256_gbps"] = round(nbytes / statistics.median(h) / 1e9, 3)
    return out


def row_group_sweep(tmp: str, layout: LatentLayout, payload: np.ndarray, rows: int,
                    repeat: int, sizes_mb: list[int]) -> dict:
    """Read ratio of the shipped reader (``LatentShards.read_arrays``) for several
    row-group sizes."""
    items = _rows(layout, rows, payload)
    schema = latent_schema(layout)
    run = os.path.join(tmp, "sweep")
    os.makedirs(os.path.join(run, "latents"), exist_ok=True)
    raw_path = os.path.join(tmp, "raw.bin")
    with pa.OSFile(raw_path, "wb") as handle:
        handle.write(pa.py_buffer(payload))

    raw_read = _raw_reader(raw_path, payload.nbytes)
    columns = _latent_columns(layout)
    out = {}
    for mb in sizes_mb:
        write_shard(items, schema, os.path.join(run, SHARD), layout, row_group_bytes=mb << 20)
        _publish(run, rows)

        def read():
            shards = LatentShards(run)
            for group in shards.row_groups():
                shards.read_arrays(group, columns)

        pairs = [(_timed(raw_read), _timed(read)) for _ in range(repeat)]
        ours = statistics.median(t for _, t in pairs)
        out[f"{mb}MB"] = {"row_groups": len(LatentShards(run).row_groups()),
                          "read_gbps": round(payload.nbytes / ours / 1e9, 3),
                          "read_ratio": round(statistics.median(r / o for r, o in pairs), 3),
                          "read_vs_best_raw": round(min(r for r, _ in pairs) / ours, 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=256, help="payload per shard, MB")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workload", default="both", choices=("pooled", "tokens", "both"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "shards.json"))
    args = parser.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)

    workloads = list(WORKLOADS) if args.workload == "both" else [args.workload]
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version(), "pyarrow": pa.__version__,
                          "numpy": np.__version__},
              "command": "python " + " ".join(["bench/shards.py", *sys.argv[1:]]),
              "payload_mb": args.mb, "repeat": args.repeat, "row_group_bytes": ROW_GROUP_BYTES,
              "workloads": {}}
    rng = np.random.default_rng(0)
    for name in workloads:
        layout = WORKLOADS[name]
        width = layout.row_bytes
        rows = (args.mb << 20) // width
        payload = rng.standard_normal(rows * width // 2, dtype=np.float32).astype(np.float16)
        with tempfile.TemporaryDirectory(prefix="egoveil-bench-") as tmp:
            layouts = list(LAYOUTS)
            result = {"rows": rows, "row_bytes": width,
                      "layouts": compare_layouts(tmp, payload, rows, width, args.repeat, layouts),
                      "shipped": shipped_path(tmp, layout, payload, rows, args.repeat),
                      "row_group_sweep": row_group_sweep(tmp, layout, payload, rows,
                                                         args.repeat, [8, 32, 128])}
        report["workloads"][name] = result
        print(json.dumps({name: result}, indent=1), flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
    with open(os.path.splitext(args.out)[0] + "_tables.md", "w") as handle:
        handle.write(markdown_tables(report))


def markdown_tables(report: dict) -> str:
    """The measured tables, for bench/results/shards.md."""
    lines = []
    for name, res in report["workloads"].items():
        lines += [f"### {name}: {res['rows']} rows of {res['row_bytes']} latent bytes", "",
                  "| layout | write GB/s | raw write GB/s | write / raw (best raw) | read GB/s | "
                  "raw read GB/s | read / raw (best raw) | file / payload |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        rows = dict(res["layouts"])
        rows["shipped: write_shard from rows, LatentShards read"] = res["shipped"]
        for layout, v in rows.items():
            lines.append(f"| {layout} | {v['write_gbps']:.2f} | {v['raw_write_gbps']:.2f} | "
                         f"{v['write_ratio']:.2f} ({v['write_vs_best_raw']:.2f}) | "
                         f"{v['read_gbps']:.2f} | {v['raw_read_gbps']:.2f} | "
                         f"{v['read_ratio']:.2f} ({v['read_vs_best_raw']:.2f}) | "
                         f"{v['file_over_payload']:.3f} |")
        sweep = ", ".join(f"{k}: {v['row_groups']} groups, {v['read_gbps']:.2f} GB/s, read / raw "
                          f"{v['read_ratio']:.2f} ({v['read_vs_best_raw']:.2f} of the best raw)"
                          for k, v in res["row_group_sweep"].items())
        shipped = res["shipped"]
        lines += ["", f"A whole shard (the small columns too) from an Arrow table through "
                  f"`shard_writer`: {shipped['table_write_gbps']:.2f} GB/s, "
                  f"{shipped['table_write_ratio']:.2f} of raw "
                  f"({shipped['table_write_vs_best_raw']:.2f} of the best raw). "
                  f"sha256 of the shard: {shipped['sha256_gbps']:.2f} GB/s. "
                  f"Row-group sizes (shipped reader): {sweep}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
