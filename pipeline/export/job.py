"""``egoveil export DIR --to webdataset|hf DEST``: plan, write the shards, record, card.

1. The source is verified as ``egoveil audit verify`` verifies it, and read only
   through its manifest (``pipeline.export.source``); the shards and clips it reads
   are hashed as they are read, once, and checked before the export is recorded.
2. A plan reads the small columns of every shard: the filters pick rows, each row's
   identity (wearer pseudonym, else recording) picks its split, and a split left
   empty is refused before anything is written.
3. Each source shard is exported on its own (``export_shard``): its selected rows,
   by split, into files of about ``--target-shard-mb``, named
   ``<split>-<source shard>-<part>``. Small exports run in this process; large ones
   run as a Beam job with one element per source shard, and give the same bytes.
   A shard is read a row group at a time, parsed from the bytes that are hashed; a
   second thread hashes those bytes (against the manifest) and the files written (for
   the lineage) while this one parses and writes. The shard's rows are picked again
   from the hashed bytes, and must be the ones the plan picked.
4. ``finish`` records the export in the source's audit log (an ``export`` event:
   export id, rows, files and their digests), then writes the dataset card and,
   last, ``egoveil-export.json``, the lineage that ``--sync`` reads.
"""

from __future__ import annotations

import logging
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import UserError
from pipeline.export import hf, webdataset
from pipeline.export.files import HashingSink, created
from pipeline.export.hashing import HashThread
from pipeline.export.lineage import (
    EXPORT_FILE,
    FORMATS,
    Lineage,
    record_in_source,
    write_card_and_lineage,
)
from pipeline.export.source import (
    ClipReader,
    ExportSource,
    ShardReader,
    SourceChecks,
    SourceFile,
    check_unread,
    open_source,
    owner_signer,
)
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
from schemas.latents import LATENT_COLUMNS, LatentLayout, decode_latents, shard_metadata
from transforms.discover import normalize_uri

log = logging.getLogger("egoveil")

ENGINES = ("auto", "local", "beam")
DEFAULT_BEAM_ABOVE_GB = 4.0
# Clip bytes held at once while a batch of rows is written (bounds memory whatever the
# row-group size).
_BATCH_BYTES = 16 * 1024**2


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
    shard: SourceFile
    rows: list[int]
    splits: list[str]
    clips: dict[str, SourceFile]  # clip_id -> its manifest entry, for the selected rows


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
    filter: ExportFilter = field(default_factory=ExportFilter)
    split: SplitSpec = field(default_factory=SplitSpec)


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
            table = pq.ParquetFile(handle).read(columns=list(DECISION_COLUMNS),
                                                use_threads=False)
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
                    clips[clip_id] = source.clips[clip_id]
        tasks.append(ShardTask(number, shard, selected.tolist(), splits, clips))
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

    def __init__(self, cfg: ExportConfig, number: int, split: str, schema: pa.Schema | None,
                 hashes: HashThread):
        self._cfg, self._number, self._split, self._schema = cfg, number, split, schema
        self._hashes = hashes
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
        self._sink = self._stack.enter_context(created(path, hashes=self._hashes))
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


def _write_rows(cfg: ExportConfig, files: _SplitFiles, table: pa.Table,
                clips: dict[str, SourceFile], reader: ClipReader, layout: LatentLayout,
                schema: pa.Schema | None, sizes: dict) -> None:
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
            mp4 = reader.read(clips[key]) if cfg.clips and key in clips else None
            members = webdataset.sample_members(key, meta, {n: v[i] for n, v in latents.items()},
                                                mp4)
            files.add_webdataset(key, members, tags[i])
        return
    for start, stop in _batches(table, [sizes.get(c, 0) for c in clip_ids]):
        batch = table.slice(start, stop - start)
        mp4 = [reader.read(clips[c]) if c in clips else None for c in clip_ids[start:stop]] \
            if cfg.clips else None
        files.add_table(hf.to_table(batch, cfg.columns, layout, schema, mp4), tags[start:stop])


def _shape(layout: LatentLayout, name: str) -> tuple[int, ...]:
    return layout.tokens_shape if name == "tokens" else (layout.embedding_dim,)


def _layout(cfg: ExportConfig) -> LatentLayout:
    tokens = cfg.layout.get("tokens_shape")
    return LatentLayout(embedding_dim=cfg.layout["embedding_dim"], dtype=cfg.layout["dtype"],
                        token_grid=tuple(tokens[:3]) if tokens else None,
                        token_dim=tokens[3] if tokens else None)


def _layout_of(schema: pa.Schema) -> dict | None:
    try:
        return LatentLayout.from_metadata(shard_metadata(schema)).describe()
    except (ValueError, KeyError, TypeError):
        return None


def _as_planned(cfg: ExportConfig, table: pa.Table, local: np.ndarray,
                splits: np.ndarray) -> bool:
    """Whether a row group's hashed bytes pick the rows and splits the plan picked (the
    plan read the shard before it was hashed)."""
    picked = np.flatnonzero(cfg.filter.mask(table).to_numpy(zero_copy_only=False))
    if not np.array_equal(picked, local):
        return False
    chosen = table.select(["wearer_id", "recording_id"]).take(pa.array(picked, pa.int64()))
    who = identities(chosen.column("wearer_id").to_pylist(),
                     chosen.column("recording_id").to_pylist())
    return [cfg.split.split_of(i) for i in who] == splits.tolist()


def _changed(what: str) -> UserError:
    return UserError(f"DIR changed while it was being exported ({what}); nothing was "
                     "recorded: run the command again")


def _write_group(cfg: ExportConfig, task: ShardTask, writers: dict, table: pa.Table,
                 local: np.ndarray, splits: np.ndarray, clips: ClipReader,
                 layout: LatentLayout, schema: pa.Schema | None, hashes: HashThread,
                 sizes: dict) -> None:
    """Write a row group's selected rows (``local``) into their splits' files."""
    if local[-1] - local[0] + 1 == len(local):  # a run of rows: no copy
        table = table.slice(int(local[0]), len(local))
    else:
        table = table.take(pa.array(local))
    names = sorted(set(splits.tolist()))
    for split in names:
        part = table if len(names) == 1 else table.filter(pa.array(splits == split))
        files = writers.setdefault(split, _SplitFiles(cfg, task.number, split, schema, hashes))
        _write_rows(cfg, files, part, task.clips, clips, layout, schema, sizes)


def export_shard(cfg: ExportConfig, task: ShardTask, clip_sizes: dict | None = None) -> list[dict]:
    """Write one source shard's selected rows into the export; returns the files written.

    Every source byte used is hashed as it is read and checked against the manifest
    before this returns.

    Raises:
        UserError: the shard or a clip is not the file the manifest lists (what was
            written is left for the caller to remove).
    """
    layout = _layout(cfg)
    read = list(dict.fromkeys(cfg.columns + ["clip_id", "wearer_id", "recording_id"]
                              + list(DECISION_COLUMNS)))
    selected = np.asarray(task.rows, dtype=np.int64)
    splits = np.asarray(task.splits)
    writers: dict[str, _SplitFiles] = {}
    # One thread hashes what is read and what is written, beside this one.
    with HashThread() as hashes:
        checks = SourceChecks(hashes)
        clips = ClipReader(cfg.source)
        with ShardReader(cfg.source, task.shard, checks) as shard:
            if _layout_of(shard.schema) != cfg.layout:
                raise shard.refuse(_changed("a shard's layout is not the first shard's"))
            schema = hf.features(shard.schema, cfg.columns, layout, cfg.clips).arrow_schema \
                if cfg.to == "hf" else None
            offset = 0
            # A row group at a time: the memory an export holds is the same for every size
            # of dataset (a row group is what a run's shard writer held, schemas.latents).
            for table in shard.row_groups(read):
                n = table.num_rows
                lo, hi = np.searchsorted(selected, [offset, offset + n])
                local = selected[lo:hi] - offset
                if not _as_planned(cfg, table, local, splits[lo:hi]):
                    raise shard.refuse(_changed("a shard's rows are not the ones planned"))
                if hi > lo:
                    _write_group(cfg, task, writers, table, local, splits[lo:hi], clips,
                                 layout, schema, hashes, clip_sizes or {})
                offset += n
                del table  # before the next row group is read: one is held at a time
            if len(selected) and selected[-1] >= offset:
                raise shard.refuse(_changed("a shard has fewer rows than planned"))
            shard.finish()
        written = [f for split in sorted(writers) for f in writers[split].close()]
        checks.check()
    return written


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


def _dest_is_free(dest: str) -> bool:
    """Refuse a DEST that holds anything; whether it is a local folder still to be made."""
    from apache_beam.io.filesystems import FileSystems

    pattern = FileSystems.join(dest, "*") if "://" in dest else None
    absent = False
    if pattern:
        found = FileSystems.match([pattern])[0].metadata_list
    else:
        import os

        if os.path.exists(dest) and not os.path.isdir(dest):
            raise UserError("DEST exists and is not a folder")
        absent = not os.path.exists(dest)
        found = [] if absent else os.listdir(dest)
    if found:
        raise UserError("DEST is not empty; export into a new folder (an existing export is "
                        "updated with `egoveil export DIR --sync DEST`)")
    return absent


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
        splits=splits, filter=request.filter, split=request.split)
    return cfg, tasks


def _read_by(tasks: list[ShardTask]) -> set[str]:
    """The source files the tasks read (each hashed as it is read)."""
    return {t.shard.path for t in tasks} | {c.path for t in tasks for c in t.clips.values()}


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
    made_dest = _dest_is_free(dest)
    # Every check of `egoveil audit verify`; the shards and clips the export reads are
    # checked as they are read (each read once), the others just below.
    source = open_source(directory, content_on_read=True)
    signer = owner_signer(request.key_file, source)
    with OutputLock(source.uri, "export"):
        check_no_run_in_progress(source.uri, "export")
        try:
            cfg, tasks = configure(source, request)
        except Exception:
            # The plan read the shards' small columns before they were hashed: a shard
            # that is not the one listed is refused as such, whatever the plan said.
            check_unread(source, set())
            raise
        check_unread(source, _read_by(tasks))
        engine = request.engine
        if engine == "auto":
            engine = "beam" if source.source_bytes > request.beam_above_gb * 1024**3 else "local"
        sizes = {c: source.clips[c].bytes for c in source.clips}
        try:
            if engine == "local":
                from pipeline.export import card

                # The card's imports and template, compiled while the files are written.
                preparing = threading.Thread(target=card.prepare, daemon=True)
                preparing.start()
                # Each source shard writes files of its own, so threads give the same bytes
                # in any order. One by default: measured on 2 shared cores, a second thread
                # added ~170 MB of peak memory and no speed (bench/export.py).
                workers = max(1, min(len(tasks), request.workers))
                with ThreadPoolExecutor(workers, thread_name_prefix="egoveil-export") as pool:
                    done = list(pool.map(lambda task: export_shard(cfg, task, sizes), tasks))
                preparing.join()
                lineage = finish(cfg, [f for written in done for f in written], signer)
            else:
                from pipeline.export.beam_job import run_beam_export

                lineage = run_beam_export(cfg, tasks, sizes, beam_argv or [], test_pipeline)
        except BaseException:
            _remove_partial(cfg.dest, made_dest)
            raise
    return ExportSummary(export_id=cfg.export_id, to=cfg.to, rows=lineage.rows,
                         files=len(lineage.files), bytes=sum(f["bytes"] for f in lineage.files),
                         splits=lineage.splits, engine=engine,
                         audit_entry=lineage.source.get("audit_entry", ""))


def _remove_partial(dest: str, made_dest: bool) -> None:
    """An export that failed leaves no files: a half-written export must not be loaded.
    A local DEST it made is removed too (with its folders), one that was there is left
    empty."""
    import os

    from apache_beam.io.filesystems import FileSystems

    from pipeline.output_files import delete_if_present

    if FileSystems.exists(FileSystems.join(dest, EXPORT_FILE)):
        return  # finished after all (the failure came later)
    matched = FileSystems.match([FileSystems.join(dest, "**")])[0].metadata_list
    delete_if_present([m.path for m in matched])
    if "://" not in dest and os.path.isdir(dest):
        for folder, _, _ in sorted(os.walk(dest), key=lambda w: -len(w[0])):
            if folder != dest or made_dest:
                try:
                    os.rmdir(folder)
                except OSError:
                    pass  # not empty: something else was written there
