"""Finished segments, remembered in the output folder so that reruns and restarts skip them.

A segment's work (decode, detect, redact, verify, embed) is the expensive part of
a run. Once it is done its results are kept under
``DIR/.cache/segments/<config hash>/<segment key>/``, keyed by the run's
configuration hash and by the recording's keyed pseudonym (itself a keyed hash of
the recording's bytes) and the segment's place in it (PRIVACY.md 16):

- ``done-<views>.json``: written by the anonymize step when the segment succeeded:
  the ids of its clips, its audit events and its clip files. One per group of views,
  because a Project Aria file is several recordings of one content hash (its RGB
  camera and its SLAM cameras) that share a recording pseudonym;
- ``<clip_id>.arrow``: one latent row each, written as soon as the encoder
  returned it.

A segment counts as finished only when its ``done`` file and every row it lists exist
(and, with ``--clips``, every clip file with its hash), so a run killed at any
point resumes where it stopped and a rerun of the same inputs and configuration
does no segment work. Failed segments are not remembered: a rerun retries them.
The cache holds pseudonyms and latents only, like the shards; ``egoveil erase``
deletes it whole.
"""

from __future__ import annotations

import hashlib
import io
import json

import pyarrow as pa

from privacy import identifiers
from schemas.elements import LatentRow, Segment
from schemas.latents import LatentLayout, latent_schema
from schemas.records import AuditEvent
from schemas.stages import PublishedFile
from transforms.stores.filesystems import FileSystemsStore
from transforms.stores.shards import rows_to_table

CACHE_DIR = ".cache"


def cache_prefix(config_fingerprint: str) -> str:
    """The cache of one configuration, relative to the output folder."""
    return f"{CACHE_DIR}/segments/{config_fingerprint[:16]}"


class SegmentCache:
    """The finished segments of one configuration in one output folder.

    Files are written through ``FileSystemsStore`` (beside, then moved into place), so
    a kill mid-write leaves no half file under a name that is read.

    Args:
        output: the output folder, or None to remember nothing.
        config_fingerprint: the run's configuration hash.
        layout: the latent columns' layout (rows are stored with the shard schema).
    """

    def __init__(self, output: str | None, config_fingerprint: str,
                 layout: LatentLayout) -> None:
        self._store = FileSystemsStore(output) if output is not None else None
        self._prefix = cache_prefix(config_fingerprint)
        self.layout = layout

    def _dir(self, recording_id: str, segment_index: int) -> str:
        return f"{self._prefix}/{identifiers.segment_key(recording_id, segment_index)}"

    def _done(self, segment: Segment) -> str:
        rec = segment.recording
        views = hashlib.sha256(f"{rec.layout}|{'|'.join(rec.views)}".encode()).hexdigest()[:12]
        return f"{self._dir(rec.recording_id, segment.index)}/done-{views}.json"

    def mark_done(self, segment: Segment, clip_ids: list[str], events: list[AuditEvent],
                  files: list[PublishedFile]) -> None:
        if self._store is None:
            return
        doc = {"clips": sorted(clip_ids), "events": [e.to_dict() for e in events],
               "files": [f.to_entry() for f in files]}
        self._store.write(self._done(segment), json.dumps(doc, sort_keys=True).encode())

    def put_row(self, row: LatentRow) -> None:
        if self._store is None:
            return
        sink = io.BytesIO()
        table = rows_to_table([row], latent_schema(self.layout))
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        self._store.write(f"{self._dir(row.recording_id, row.segment_index)}/"
                          f"{row.clip_id}.arrow", sink.getvalue())

    def get(self, segment: Segment, with_files: bool) -> dict | None:
        """The finished segment's rows, events and files, or None when it must be done."""
        store = self._store
        if store is None:
            return None
        folder = self._dir(segment.recording.recording_id, segment.index)
        done = self._done(segment)
        try:
            if not store.exists(done):
                return None
            doc = json.loads(store.read(done))
            rows = []
            for clip_id in doc["clips"]:
                path = f"{folder}/{clip_id}.arrow"
                if not store.exists(path):
                    return None
                rows.extend(self._rows(store.read(path)))
            files = [PublishedFile.from_entry(f) for f in doc["files"]]
            if with_files and not all(store.exists(f.path) and hashlib.sha256(
                    store.read(f.path)).hexdigest() == f.sha256 for f in files):
                return None
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
            return None  # a damaged entry is redone, never trusted
        return {"rows": rows, "events": [AuditEvent(**e) for e in doc["events"]],
                "files": files}

    def _rows(self, data: bytes) -> list[LatentRow]:
        table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
        if table.schema.remove_metadata() != latent_schema(self.layout).remove_metadata():
            raise ValueError("cached row has another schema")
        return [LatentRow(**values) for values in table.to_pylist()]
