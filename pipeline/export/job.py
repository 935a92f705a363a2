"""``egoveil export DIR --to webdataset|hf DEST``: plan, write the shards, record, card.

1. The source is verified as ``egoveil audit verify`` verifies it, and read only
   through its manifest (``pipeline.export.source``).
2. A plan reads the small columns of every shard: the filters pick rows, each row's
   identity (wearer pseudonym, else recording) picks its split, and a split left
   empty is refused before anything is written.
3. Each source shard is exported on its own (``export_shard``): its selected rows,
   by split, into files of about ``--target-shard-mb``, named
   ``<split>-<source shard>-<part>``. Small exports run in this process; large ones
   run as a Beam job with one element per source shard, and give the same bytes.
4. ``finish`` records the export in the source's audit log (an ``export`` event:
   export id, rows, files and their digests), then writes the dataset card and,
   last, ``egoveil-export.json``, the lineage that ``--sync`` reads.
"""

from __future__ import annotations

import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import UserError
from pipeline.export import hf, webdataset
from pipeline.export.files import HashingSink, created, open_read
from pipeline.export.lineage import (
    EXPORT_FILE,
    FORMATS,
    Lineage,
    record_in_source,
    write_card_and_lineage,
)
from pipeline.export.source import ExportSource, open_source, owner_signer
from pipeline.output_files import confined
from privacy.export_policy import (
    DECISION_COLUMNS,
    ExportFilter,
    ExportPolicyError,
    SplitSpec,
    check_splits,
    erasure_tag,
    identities,
)
from schemas.latents import LATENT_COLUMNS, LatentLayout, decode_latents
from transforms.discover import normalize_uri

log = logging.getLogger("egoveil")

ENGINES = ("auto", "local", "beam")
DEFAULT_BEAM_ABOVE_GB = 4.0
# Clip bytes held at once while a batch of rows is written (bounds memory whatever the
# row-group size).
_BATCH_BYTES = 16 * 1024**2
# Latent bytes read from a source shard at a time.
_READ_BYTES = 8 * 1024**2


@dataclass(slots=True)
class ExportRequest:
    """What the user asked for (``egoveil export`` options)."""

    to: str
    dest: str
    split: SplitSpec = field(default_factory=SplitSpec)
    filter: ExportFilter = field(default_factory=ExportFilter)
    clips: bool = True
    target_shard_mb: float = 256.0
    license: str = "unknown"
    task_categories: tuple[str, ...] = ("feature-extraction",)
    name: str | None = None
    engine: str = "auto"
    beam_above_gb: float = DEFAULT_BEAM_ABOVE_GB
    workers: int = 1  # source shards exported at once in process (threads)
    key_file: str | None = None  # DIR's key (else $EGOVEIL_PSEUDONYM_KEY): signs its log


@dataclass(slots=True)
class ShardTask:
    """One source shard's part of the export: which rows, to which split, with which clips."""

    number: int
    path: str
    rows: list[int]
    splits: list[str]
    clips: dict[str, str]  # clip_id -> path in the source, for the selected rows


@dataclass(slots=True)
class ExportConfig:
    """Everything a worker needs to export one shard and finish the export (picklable)."""

    export_id: str
    salt: str
    to: str
    source: str
    dest: str
    columns: list[str]
    layout: dict
    target_bytes: int
    clips: bool
    verified_head: str
    key_file: str | None  # a path, never the key: the finishing step loads it itself
    request: dict
    splits: dict  # split -> {"rows": n, "identities": n}


@dataclass(slots=True)
class ExportSummary:
    """What an export wrote."""

    export_id: str
    to: str
    rows: int
    files: int
    bytes: int
    splits: dict
    engine: str
    audit_entry: str


# ---------------------------------------------------------------------------- planning


def _source_columns(schema: pa.Schema) -> list[str]:
    missing = [c for c in DECISION_COLUMNS if c not in schema.names]
    if missing:
        raise UserError(f"DIR's shards lack the column {missing[0]}; they cannot be exported")
    return schema.names


def plan(source: ExportSource, request: ExportRequest) -> tuple[list[ShardTask], dict]:
    """The rows each shard contributes and their splits, from the small columns only.

    Raises:
        UserError: no row passes the filters, or a split would be empty.
    """
    tasks, rows_by_split, ids_by_split, total = [], {}, {}, 0
    seen: dict[str, str] = {}
    for number, shard in enumerate(source.shards):
        with source.store.open(shard.path) as handle:
            table = pq.read_table(handle, columns=list(DECISION_COLUMNS))
        total += table.num_rows
        selected = np.flatnonzero(request.filter.mask(table).to_numpy(zero_copy_only=False))
        if not len(selected):
            continue
        chosen = table.take(pa.array(selected))
        who = identities(chosen.column("wearer_id").to_pylist(),
                         chosen.column("recording_id").to_pylist())
        splits = [request.split.split_of(identity) for identity in who]
        for identity, split in zip(who, splits):
            rows_by_split[split] = rows_by_split.get(split, 0) + 1
            if identity not in seen:
                seen[identity] = split
                ids_by_split[split] = ids_by_split.get(split, 0) + 1
        clips = {}
        if request.clips:
            for clip_id in chosen.column("clip_id").to_pylist():
                if clip_id in source.clips:
                    clips[clip_id] = source.clips[clip_id].path
        tasks.append(ShardTask(number, shard.path, selected.tolist(), splits, clips))
    if not tasks:
        raise UserError(f"no row of DIR passes the filters ({total} rows, none with "
                        f"{_describe_filter(request.filter)}); nothing was exported")
    try:
        check_splits(request.split, rows_by_split, ids_by_split)
    except ExportPolicyError as exc:
        raise UserError(str(exc)) from None
    stats = {name: {"rows": rows_by_split.get(name, 0), "identities": ids_by_split.get(name, 0)}
             for name in request.split.names}
    return tasks, stats


def _describe_filter(f: ExportFilter) -> str:
    parts = [f"qa_status in {','.join(f.qa_statuses)}"]
    if f.views:
        parts.append(f"view in {','.join(f.views)}")
    if f.encoders:
        parts.append("the given --encoder")
    if f.min_frames:
        parts.append(f"at least {f.min_frames} frames")
    if f.time_range != (None, None):
        parts.append("inside --time-range")
    return " and ".join(parts)


# ----------------------------------------------------------------------- one source shard


def file_name(to: str, split: str, number: int, part: int) -> str:
    """An export file's path in DEST: split, source shard, part; nothing else."""
    if to == "webdataset":
        return f"{split}-{number:05d}-{part:03d}{webdataset.EXTENSION}"
    return f"{hf.DATA_DIR}/{split}-{number:05d}-{part:03d}{hf.EXTENSION}"


class _SplitFiles:
    """The files one source shard writes for one split, rotated at the target size."""

    def __init__(self, cfg: ExportConfig, number: int, split: str, schema: pa.Schema | None):
        self._cfg, self._number, self._split, self._schema = cfg, number, split, schema
        self._stack: ExitStack | None = None
        self._sink: HashingSink | None = None
        self._writer = None
        self._part = -1
        self._samples: list[dict] = []
        self._arrow_bytes = 0
        self.files: list[dict] = []

    def _open(self) -> None:
        self._part += 1
        self._stack = ExitStack()
        path = confined(self._cfg.dest, file_name(self._cfg.to, self._split, self._number,
                                                  self._part))
        self._sink = self._stack.enter_context(created(path))
        self._writer = (webdataset.TarWriter(self._sink) if self._cfg.to == "webdataset"
                        else hf.ParquetWriter(self._sink, self._schema))
        self._samples, self._arrow_bytes = [], 0

    def _close(self) -> None:
        self._writer.close()
        self._stack.close()
        self.files.append({"path": file_name(self._cfg.to, self._split, self._number,
                                             self._part),
                           "split": self._split, "rows": len(self._samples),
                           "bytes": self._sink.size, "sha256": self._sink.sha256,
                           "arrow_bytes": self._arrow_bytes, "samples": self._samples})
        self._stack = self._sink = self._writer = None

    def _ready(self) -> None:
        if self._sink is None:
            self._open()

    def _rotate(self) -> None:
        if self._sink.size >= self._cfg.target_bytes:
            self._close()

    def add_webdataset(self, key: str, members: list[tuple[str, bytes]], sample: dict) -> None:
        self._ready()
        for name, *parts in members:
            self._writer.add(name, *parts)
        self._samples.append(sample)
        self._rotate()

    def add_table(self, table: pa.Table, samples: list[dict]) -> None:
        self._ready()
        self._writer.write(table)
        self._samples.extend(samples)
        self._arrow_bytes += table.nbytes
        self._rotate()

    def close(self) -> list[dict]:
        if self._sink is not None:
            self._close()
        return self.files


def _read_clip(cfg: ExportConfig, rel: str | None) -> bytes | None:
    if rel is None:
        return None
    with open_read(confined(cfg.source, rel)) as handle:
        return handle.read()


def _batches(table: pa.Table, clip_sizes: list[int]) -> list[tuple[int, int]]:
    """Row ranges whose clips and latents stay under ``_BATCH_BYTES`` (at least one row)."""
    per_row = table.nbytes / max(1, table.num_rows)
    ranges, start, held = [], 0, 0.0
    for i, size in enumerate(clip_sizes):
        held += size + per_row
        if held >= _BATCH_BYTES:
            ranges.append((start, i + 1))
            start, held = i + 1, 0.0
    if start < table.num_rows:
        ranges.append((start, table.num_rows))
    return ranges


def _metadata(table: pa.Table, columns: list[str], layout: LatentLayout) -> list[dict]:
    names = [c for c in columns if c not in LATENT_COLUMNS]
    rows = table.select(names).to_pylist()
    for row in rows:
        row["latent_dtype"] = layout.dtype
    return rows


def _write_rows(cfg: ExportConfig, files: _SplitFiles, table: pa.Table, clip_paths: dict,
                layout: LatentLayout, schema: pa.Schema | None, sizes: dict) -> None:
    clip_ids = table.column("clip_id").to_pylist()
    tags = [{"clip_id": c,
             "wearer_tag": erasure_tag(cfg.salt, c, "wearer", w),
             "recording_tag": erasure_tag(cfg.salt, c, "recording", r)}
            for c, w, r in zip(clip_ids, table.column("wearer_id").to_pylist(),
                               table.column("recording_id").to_pylist())]
    if cfg.to == "webdataset":
        # One sample at a time: a clip is read just before it is written, and the
        # latents are views of the row group's buffers.
        latents = {name: decode_latents(table.column(name), _shape(layout, name), layout.dtype)
                   for name in cfg.columns if name in LATENT_COLUMNS}
        for i, meta in enumerate(_metadata(table, cfg.columns, layout)):
            key = clip_ids[i]
            mp4 = _read_clip(cfg, clip_paths.get(key)) if cfg.clips else None
            members = webdataset.sample_members(key, meta, {n: v[i] for n, v in latents.items()},
                                                mp4)
            files.add_webdataset(key, members, tags[i])
        return
    for start, stop in _batches(table, [sizes.get(c, 0) for c in clip_ids]):
        batch = table.slice(start, stop - start)
        mp4 = [_read_clip(cfg, clip_paths.get(c)) for c in clip_ids[start:stop]] \
            if cfg.clips else None
        files.add_table(hf.to_table(batch, cfg.columns, layout, schema, mp4), tags[start:stop])


def _shape(layout: LatentLayout, name: str) -> tuple[int, ...]:
    return layout.tokens_shape if name == "tokens" else (layout.embedding_dim,)


def _open_shard(path: str):
    """A source shard for reading row groups: a local file through pyarrow's own reader
    (buffers from Arrow's memory pool, released after each row group), else Beam's."""
    if "://" not in path:
        return pa.OSFile(path, "rb")
    return open_read(path)


def export_shard(cfg: ExportConfig, task: ShardTask, clip_sizes: dict | None = None) -> list[dict]:
    """Write one source shard's selected rows into the export; returns the files written."""
    layout = LatentLayout(embedding_dim=cfg.layout["embedding_dim"], dtype=cfg.layout["dtype"],
                          token_grid=tuple(cfg.layout["tokens_shape"][:3])
                          if cfg.layout.get("tokens_shape") else None,
                          token_dim=cfg.layout["tokens_shape"][3]
                          if cfg.layout.get("tokens_shape") else None)
    read = list(dict.fromkeys(cfg.columns + ["clip_id", "wearer_id", "recording_id"]))
    selected = np.asarray(task.rows, dtype=np.int64)
    splits = np.asarray(task.splits)
    writers: dict[str, _SplitFiles] = {}
    # Record batches of about _READ_BYTES of latents, whatever the shards' row groups:
    # the memory an export holds is the same for every size of dataset.
    per_batch = max(1, _READ_BYTES // max(1, layout.row_bytes))
    with _open_shard(confined(cfg.source, task.path)) as handle:
        parquet = pq.ParquetFile(handle)
        schema = hf.features(parquet.schema_arrow, cfg.columns, layout, cfg.clips).arrow_schema \
            if cfg.to == "hf" else None
        offset = 0
        for batch in parquet.iter_batches(batch_size=per_batch, columns=read,
                                          use_threads=False):
            n = batch.num_rows
            lo, hi = np.searchsorted(selected, [offset, offset + n])
            if hi > lo:
                table = pa.Table.from_batches([batch])
                local = selected[lo:hi] - offset
                if local[-1] - local[0] + 1 == len(local):  # a run of rows: no copy
                    table = table.slice(int(local[0]), len(local))
                else:
                    table = table.take(pa.array(local))
                names = sorted(set(splits[lo:hi].tolist()))
                for split in names:
                    part = table if len(names) == 1 else \
                        table.filter(pa.array(splits[lo:hi] == split))
                    files = writers.setdefault(split, _SplitFiles(cfg, task.number, split,
                                                                  schema))
                    _write_rows(cfg, files, part, task.clips, layout, schema,
                                clip_sizes or {})
            offset += n
    return [f for split in sorted(writers) for f in writers[split].close()]


# ------------------------------------------------------------------------------ finishing


def finish(cfg: ExportConfig, files: list[dict], signer=None) -> Lineage:
    """Record the export in the source's log, then write the card and the lineage.

    Args:
        signer: DIR's audit key; loaded from ``cfg.key_file`` when not given (a Beam
            worker reads the key itself, it never travels in the job).
    """
    files = sorted(files, key=lambda f: f["path"])
    lineage = Lineage.new(cfg, files)
    source = open_source(cfg.source, verify=False, expect_head=cfg.verified_head)
    if signer is None:
        signer = owner_signer(cfg.key_file, source)
    lineage.source["audit_entry"] = record_in_source(source, lineage, signer)
    write_card_and_lineage(cfg.dest, source, lineage)
    return lineage


# ------------------------------------------------------------------------------- the job


def _dest_is_free(dest: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    pattern = FileSystems.join(dest, "*") if "://" in dest else None
    if pattern:
        found = FileSystems.match([pattern])[0].metadata_list
    else:
        import os

        if os.path.exists(dest) and not os.path.isdir(dest):
            raise UserError("DEST exists and is not a folder")
        found = os.listdir(dest) if os.path.isdir(dest) else []
    if found:
        raise UserError("DEST is not empty; export into a new folder (an existing export is "
                        "updated with `egoveil export DIR --sync DEST`)")


def configure(source: ExportSource, request: ExportRequest) -> tuple[ExportConfig, list[ShardTask]]:
    """Check the request against the source and plan the export.

    Raises:
        UserError: a bad filter, column or split, or nothing to export.
    """
    schema, layout = source.schema_and_layout()
    _source_columns(schema)
    try:
        columns = request.filter.output_columns(schema.names)
    except ExportPolicyError as exc:
        raise UserError(str(exc)) from None
    tasks, splits = plan(source, request)
    cfg = ExportConfig(
        export_id=secrets.token_hex(8), salt=secrets.token_hex(16), to=request.to,
        source=source.uri, dest=normalize_uri(request.dest), columns=columns,
        layout=layout.describe(), target_bytes=int(request.target_shard_mb * 1024**2),
        clips=request.clips and bool(source.clips), verified_head=source.head,
        key_file=request.key_file,
        request={"split": request.split.describe(), "filter": request.filter.describe(),
                 "clips": request.clips and bool(source.clips),
                 "target_shard_mb": request.target_shard_mb, "license": request.license,
                 "task_categories": list(request.task_categories), "name": request.name},
        splits=splits)
    return cfg, tasks


def export(directory: str, request: ExportRequest, beam_argv: list[str] | None = None,
           test_pipeline=None) -> ExportSummary:
    """Run ``egoveil export DIR --to FORMAT DEST``.

    Raises:
        UserError: anything the user can fix, as one line; nothing is exported then.
    """
    from pipeline.erase import OutputLock, check_no_run_in_progress

    if request.to not in FORMATS:
        raise UserError(f"--to takes {' or '.join(FORMATS)}")
    if request.engine not in ENGINES:
        raise UserError(f"--engine takes {', '.join(ENGINES)}")
    if request.target_shard_mb <= 0:
        raise UserError("--target-shard-mb must be positive")
    if request.workers < 1:
        raise UserError("--workers must be at least 1")
    if request.to == "hf":
        hf._datasets()
    dest, uri = normalize_uri(request.dest).rstrip("/"), normalize_uri(directory).rstrip("/")
    if dest == uri or dest.startswith(uri + "/"):
        raise UserError("DEST must be outside DIR: an export is not part of the output")
    _dest_is_free(dest)
    source = open_source(directory)
    signer = owner_signer(request.key_file, source)
    with OutputLock(source.uri, "export"):
        check_no_run_in_progress(source.uri, "export")
        cfg, tasks = configure(source, request)
        engine = request.engine
        if engine == "auto":
            engine = "beam" if source.source_bytes > request.beam_above_gb * 1024**3 else "local"
        sizes = {c: source.clips[c].bytes for c in source.clips}
        try:
            if engine == "local":
                # Each source shard writes files of its own, so threads give the same bytes
                # in any order. One by default: measured on 2 shared cores, a second thread
                # added ~170 MB of peak memory and no speed (bench/export.py).
                workers = max(1, min(len(tasks), request.workers))
                with ThreadPoolExecutor(workers, thread_name_prefix="egoveil-export") as pool:
                    done = list(pool.map(lambda task: export_shard(cfg, task, sizes), tasks))
                lineage = finish(cfg, [f for written in done for f in written], signer)
            else:
                from pipeline.export.beam_job import run_beam_export

                lineage = run_beam_export(cfg, tasks, sizes, beam_argv or [], test_pipeline)
        except BaseException:
            _remove_partial(cfg.dest)
            raise
    return ExportSummary(export_id=cfg.export_id, to=cfg.to, rows=lineage.rows,
                         files=len(lineage.files), bytes=sum(f["bytes"] for f in lineage.files),
                         splits=lineage.splits, engine=engine,
                         audit_entry=lineage.source.get("audit_entry", ""))


def _remove_partial(dest: str) -> None:
    """An export that failed leaves no files: a half-written export must not be loaded."""
    from apache_beam.io.filesystems import FileSystems

    from pipeline.output_files import delete_if_present

    if FileSystems.exists(FileSystems.join(dest, EXPORT_FILE)):
        return  # finished after all (the failure came later)
    matched = FileSystems.match([FileSystems.join(dest, "**")])[0].metadata_list
    delete_if_present([m.path for m in matched])
