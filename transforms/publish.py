"""Publishing a run: staged files into place, then ``manifest.json``, then ``_SUCCESS``.

Readers trust only the manifest (PRIVACY.md 18): it lists every published file
with its sha256 and row count, and ``_SUCCESS`` is written last, after it. The
data contract runs before anything moves (``transforms.run_audit``): a run that
fails it publishes nothing.
"""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from privacy.audit_log import file_entry
from privacy.data_contract import ShardSource
from privacy.tombstones import TOMBSTONE_PATH
from schemas.audit import DEADLETTER_FILE, EVENTS_FILE, MANIFEST, RECORD_FILE, SUCCESS
from schemas.elements import ShardFile
from schemas.latents import SCHEMA_VERSION
from transforms.output_store import FileSystemsStore
from transforms.run_audit import RunAudit, staged_shard_loader
from transforms.shards import shard_name
from transforms.tombstone_io import check_unchanged


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

    def __init__(self, output_dir: str, staging_dir: str, run_record: dict) -> None:
        self._out = output_dir
        self._staging = staging_dir
        self._record = run_record

    def process(self, _, shards, clip_files, deadletters, events):
        out = self._out
        tombstones = self._record.get("erasure", {}).get("tombstones_sha256")
        if tombstones is not None:
            check_unchanged(out, tombstones)
        shards = sorted(shards, key=lambda s: s.index)
        dl_records = sorted((d.to_dict() for d in deadletters),
                            key=lambda d: json.dumps(d, sort_keys=True))
        event_records = sorted((e.to_dict() for e in events),
                               key=lambda e: json.dumps(e, sort_keys=True))
        totals = {
            "latent_rows": sum(s.rows for s in shards),
            "shards": len(shards),
            "clips": len(clip_files),
            "deadletters": len(dl_records),
            "recordings_without_consent": sum(e["kind"] == "consent_excluded"
                                              for e in event_records),
            "recordings_erased_skipped": sum(e["kind"] == "erasure_excluded"
                                             for e in event_records),
        }
        audit = RunAudit(FileSystemsStore(out), self._record, event_records, dl_records, totals)
        contract = audit.check([ShardSource(f"latents/{shard_name(number)}", shard.rows,
                                            staged_shard_loader(shard.staging_path))
                                for number, shard in enumerate(shards)])
        if not contract.success:
            audit.keep_failure(self._staging)
            yield dict(totals, published=False)
            return

        _delete_quietly([FileSystems.join(out, SUCCESS)])
        files = []
        # Renumber shards densely so names are part-00000 .. part-(n-1).
        latents_dir = FileSystems.join(out, "latents")
        ensure_dir(latents_dir)
        wanted = set()
        for number, shard in enumerate(shards):
            rel = f"latents/{shard_name(number)}"
            dest = FileSystems.join(out, rel)
            _delete_quietly([dest])
            FileSystems.rename([shard.staging_path], [dest])
            wanted.add(dest)
            files.append({"path": rel, "kind": "latents", "sha256": shard.sha256,
                          "bytes": shard.size_bytes, "rows": shard.rows})
        stale = [m.path for m in FileSystems.match([FileSystems.join(latents_dir, "part-*")])[0]
                 .metadata_list if m.path not in wanted]
        _delete_quietly(stale)

        for clip in sorted(clip_files, key=lambda c: c["path"]):
            files.append({"path": clip["path"], "kind": "clip", "sha256": clip["sha256"],
                          "bytes": clip["bytes"], "rows": clip["frames"]})

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
                    "config_sha256": self._record.get("config_sha256"), "totals": totals}
        audit.seal(manifest, files)
        _write_bytes(FileSystems.join(out, SUCCESS), b"")
        _delete_quietly([self._staging])
        yield dict(totals, published=True)


class Publish(beam.PTransform):
    """Waits for every staged shard, clip, dead letter and event, then publishes once."""

    def __init__(self, output_dir: str, staging_dir: str, run_record: dict) -> None:
        super().__init__()
        self._fn = PublishFn(output_dir, staging_dir, run_record)

    def expand(self, inputs):
        shards, clip_files, deadletters, events = inputs
        pipeline = shards.pipeline
        return (pipeline
                | "Once" >> beam.Create([None])
                | "PublishRun" >> beam.ParDo(
                    self._fn,
                    shards=beam.pvalue.AsList(shards),
                    clip_files=beam.pvalue.AsList(clip_files),
                    deadletters=beam.pvalue.AsList(deadletters),
                    events=beam.pvalue.AsList(events)))


__all__ = ["Publish", "ShardFile", "MANIFEST", "SUCCESS", "DEADLETTER_FILE", "EVENTS_FILE",
           "RECORD_FILE"]
