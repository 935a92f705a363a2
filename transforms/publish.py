"""Publishing a run: staged files into place, then ``manifest.json``, then ``_SUCCESS``.

Readers trust only the manifest (PRIVACY.md 18): it lists every published file
with its sha256 and row count, and ``_SUCCESS`` is written last, after it. The
data contract runs before anything moves (``transforms.stores.audit_files``): a run that
fails it publishes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from privacy.audit_log import file_entry
from privacy.data_contract import ShardSource
from privacy.gates import FailureRateGate
from privacy.tombstones import TOMBSTONE_PATH
from schemas.audit import (
    DEADLETTER_FILE,
    PUBLISHING,
    SUCCESS,
)
from schemas.latents import SCHEMA_VERSION
from schemas.stages import PublishedFile, PublishInputs
from transforms.stores.audit_files import RunAudit, staged_shard_loader
from transforms.stores.filesystems import FileSystemsStore
from transforms.stores.keys import load_key
from transforms.stores.shards import shard_name
from transforms.stores.tombstones import check_unchanged


def _write_bytes(path: str, data: bytes) -> None:
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(data)


def ensure_dir(path: str) -> None:
    """Create a folder where the filesystem has folders (object stores need none)."""
    try:
        FileSystems.mkdirs(path)
    except OSError:
        pass  # exists already, or the filesystem has no folders


def _delete_quietly(paths: list[str]) -> None:
    existing = [p for p in paths if FileSystems.exists(p)]
    if existing:
        FileSystems.delete(existing)


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()


class PublishFn(beam.DoFn):
    """Runs once, after every shard is staged: moves files in, writes manifest and _SUCCESS."""

    def __init__(self, output_dir: str, staging_dir: str, run_record: dict,
                 max_failure_rate: float = 1.0, key_file: str | None = None) -> None:
        self._out = output_dir
        self._staging = staging_dir
        self._record = run_record
        self._max_failure_rate = max_failure_rate
        self._key_file = key_file
        self._signer = None

    def setup(self) -> None:
        # The audit key that signs the seal derives from the pseudonym key, read here
        # like every other worker reads it: never part of the graph.
        self._signer = load_key(self._key_file).seal_signer()

    def process(self, _, shards, clip_files, deadletters, events, inputs):
        out = self._out
        tombstones = self._record.get("erasure", {}).get("tombstones_sha256")
        if tombstones is not None:
            check_unchanged(out, tombstones)
        shards = sorted(shards, key=lambda s: s.index)
        dl_records = sorted((d.to_dict() for d in deadletters),
                            key=lambda d: json.dumps(d, sort_keys=True))
        event_records = sorted((e.to_dict() for e in events),
                               key=lambda e: json.dumps(e, sort_keys=True))
        # One entry per clip path, whichever way it was reported (anonymized now, or
        # resumed from the cache), so the manifest never lists a file twice.
        clip_files = list({c.path: c for c in clip_files}.values())
        failed_inputs = len({d["input_id"] for d in dl_records})
        totals = {
            "latent_rows": sum(s.rows for s in shards),
            "shards": len(shards),
            "clips": len(clip_files),
            "deadletters": len(dl_records),
            "inputs": inputs,
            "inputs_failed": failed_inputs,
            "recordings_without_consent": sum(e["kind"] == "consent_excluded"
                                              for e in event_records),
            "recordings_erased_skipped": sum(e["kind"] == "erasure_excluded"
                                             for e in event_records),
        }
        gate = FailureRateGate(self._max_failure_rate, inputs, failed_inputs, dl_records)
        if not gate.passed:
            for name, data in gate.staged_files().items():
                _write_bytes(FileSystems.join(self._staging, name), data)
            yield dict(totals, published=False)
            return
        audit = RunAudit(FileSystemsStore(out), self._record, event_records, dl_records, totals,
                         self._signer)
        names = [shard_name(number, shard.sha256) for number, shard in enumerate(shards)]
        contract = audit.check([ShardSource(f"latents/{name}", shard.rows,
                                            staged_shard_loader(shard.staging_path))
                                for name, shard in zip(names, shards)])
        if not contract.success:
            audit.keep_failure(self._staging)
            yield dict(totals, published=False)
            return

        # Shards are named by their content, so moving them in never touches a file the
        # previous manifest lists: a run killed here leaves the previous manifest valid,
        # and the files it did move are the same bytes a restart would write.
        files = [PublishedFile(path=f"latents/{name}", kind="latents", sha256=shard.sha256,
                               bytes=shard.size_bytes, rows=shard.rows).to_entry()
                 for name, shard in zip(names, shards)]
        latents_dir = FileSystems.join(out, "latents")
        ensure_dir(latents_dir)
        # Said before anything moves, and signed, so that `egoveil audit verify` can tell
        # the files of a publish that was cut short from files added behind its back.
        _write_bytes(FileSystems.join(self._staging, PUBLISHING), audit.publishing_note(files))
        for entry, shard in zip(files, shards):
            dest = FileSystems.join(out, entry["path"])
            if FileSystems.exists(dest):  # same name, same content: published before
                _delete_quietly([shard.staging_path])
            else:
                FileSystems.rename([shard.staging_path], [dest])
        files.extend(clip.to_entry() for clip in sorted(clip_files, key=lambda c: c.path))

        # From here the small files change in place, then the manifest replaces the old
        # one in one rename: the only window where the folder is between two states.
        data = _jsonl(dl_records)
        _write_bytes(FileSystems.join(out, DEADLETTER_FILE), data)
        files.append(file_entry(DEADLETTER_FILE, data, "deadletter", len(dl_records)))
        tombstone_file = FileSystems.join(out, TOMBSTONE_PATH)
        if FileSystems.exists(tombstone_file):  # the erasures this run honoured
            with FileSystems.open(tombstone_file) as handle:
                files.append(file_entry(TOMBSTONE_PATH, handle.read(), "erasure_tombstones",
                                        None))
        files.extend(audit.write_files())

        manifest = {"schema_version": SCHEMA_VERSION, "run_id": self._record.get("run_id"),
                    "config_sha256": self._record.get("config_sha256"), "totals": totals,
                    "content_sha256": content_digest(self._record.get("config_sha256"),
                                                     totals, files)}
        written = audit.seal(manifest, files)
        _write_bytes(FileSystems.join(out, SUCCESS), b"")
        _delete_quietly(unlisted_outputs(out, {f["path"] for f in written["files"]}))
        _delete_quietly([self._staging])
        yield dict(totals, published=True)


def content_digest(config_sha256: str | None, totals: dict, files: list[dict]) -> str:
    """What a run published, without when and by which run: equal for a rerun that
    found nothing new (shards, clips and dead letters; not the audit files)."""
    published = sorted((f["path"], f["sha256"]) for f in files
                       if f["kind"] in ("latents", "clip", "deadletter"))
    blob = json.dumps({"config_sha256": config_sha256, "totals": totals, "files": published},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# What shard and clip files are called (shards: staged, or published with a content hash).
SHARD_NAME = re.compile(r"^latents/part-(\d{5})(?:-[0-9a-f]{12})?\.parquet$")
CLIP_NAME = re.compile(r"^clips/([0-9a-f]{32})\.mp4$")


def unlisted_outputs(output: str, listed: set[str]) -> list[str]:
    """Shard and clip files a manifest does not list.

    They are debris: of an earlier run or of a publish cut short (whose clips may be
    an erased wearer's), or of an erasure killed between its manifest swap and its
    deletions (whose old shards still hold the erased rows). Readers never see them;
    the next publish or erasure removes them.
    """
    unlisted = []
    for folder, pattern, name in (("latents", "part-*.parquet", SHARD_NAME),
                                  ("clips", "*.mp4", CLIP_NAME)):
        for meta in FileSystems.match([FileSystems.join(output, folder, pattern)])[0] \
                .metadata_list:
            rel = f"{folder}/" + meta.path.replace("\\", "/").rsplit("/", 1)[-1]
            if name.match(rel) and rel not in listed:
                unlisted.append(meta.path)
    return unlisted


class Publish(beam.PTransform):
    """Waits for every staged shard, clip, dead letter and event (``PublishInputs``), then
    publishes once."""

    def __init__(self, output_dir: str, staging_dir: str, run_record: dict,
                 max_failure_rate: float = 1.0, key_file: str | None = None) -> None:
        super().__init__()
        self._fn = PublishFn(output_dir, staging_dir, run_record, max_failure_rate, key_file)

    def expand(self, inputs: PublishInputs):
        return (inputs.shards.pipeline
                | "Once" >> beam.Create([None])
                | "PublishRun" >> beam.ParDo(
                    self._fn,
                    shards=beam.pvalue.AsList(inputs.shards),
                    clip_files=beam.pvalue.AsList(inputs.clip_files),
                    deadletters=beam.pvalue.AsList(inputs.deadletters),
                    events=beam.pvalue.AsList(inputs.events),
                    inputs=beam.pvalue.AsSingleton(inputs.inputs)))

