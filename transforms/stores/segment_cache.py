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

The cache lives in the output folder, so whoever can write there could change a
row (its wearer pseudonym, its embedding) that the next run would publish under a
valid seal. Every file therefore starts with an HMAC-SHA256 over the configuration
hash, its own place in the cache and its content, under a key derived from the
pseudonym key for this purpose alone (``PseudonymKey.mac_for``), which workers
read in ``setup()`` as they read the pseudonym key. An entry whose MAC does not
hold is never used: ``get`` raises ``CacheEntryRejected`` and the segment is done
again.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json

import pyarrow as pa

from privacy import identifiers
from privacy.pseudonyms import DerivedMac
from schemas.elements import LatentRow, Segment
from schemas.latents import LatentLayout, latent_schema
from schemas.records import AuditEvent
from schemas.stages import PublishedFile
from transforms.stores.filesystems import FileSystemsStore
from transforms.stores.keys import load_key
from transforms.stores.shards import rows_to_table

CACHE_DIR = ".cache"
MAC_PURPOSE = "segment-cache"
_MAGIC = b"egoveil-cache-v1\n"
_TAG_HEX = 64


class CacheEntryRejected(ValueError):
    """A cache entry is there but was not written by this key and configuration."""


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
        key_file: the pseudonym key (None: ``$EGOVEIL_PSEUDONYM_KEY``), read on first
            use; the MAC key derived from it is never pickled with the cache.
    """

    def __init__(self, output: str | None, config_fingerprint: str,
                 layout: LatentLayout, key_file: str | None = None) -> None:
        self._store = FileSystemsStore(output) if output is not None else None
        self._config = config_fingerprint
        self._prefix = cache_prefix(config_fingerprint)
        self.layout = layout
        self._key_file = key_file
        self._mac: DerivedMac | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_mac"] = None
        return state

    def _tag(self, rel: str, body: bytes) -> str:
        if self._mac is None:
            self._mac = load_key(self._key_file).mac_for(MAC_PURPOSE)
        return self._mac.tag(self._config.encode(), rel.encode(), body)

    def _write(self, rel: str, body: bytes) -> None:
        self._store.write(rel, _MAGIC + self._tag(rel, body).encode() + b"\n" + body)

    def _read(self, rel: str) -> bytes:
        """The content of an entry file whose MAC holds.

        Raises:
            CacheEntryRejected: the file was changed, or written under another key or
                configuration.
        """
        data = self._store.read(rel)
        head = len(_MAGIC) + _TAG_HEX + 1
        body = data[head:]
        if not data.startswith(_MAGIC) or data[head - 1:head] != b"\n" or \
                not hmac.compare_digest(data[len(_MAGIC):head - 1], self._tag(rel, body).encode()):
            raise CacheEntryRejected(f"{rel.rsplit('/', 1)[-1]}: its MAC does not hold")
        return body

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
        self._write(self._done(segment), json.dumps(doc, sort_keys=True).encode())

    def put_row(self, row: LatentRow) -> None:
        if self._store is None:
            return
        sink = io.BytesIO()
        table = rows_to_table([row], latent_schema(self.layout))
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        self._write(f"{self._dir(row.recording_id, row.segment_index)}/{row.clip_id}.arrow",
                    sink.getvalue())

    def get(self, segment: Segment, with_files: bool) -> dict | None:
        """The finished segment's rows, events and files, or None when it must be done.

        Raises:
            CacheEntryRejected: the entry is there, but a file of it was changed (its
                MAC does not hold, or a clip's sha256 differs); it must be done again.
        """
        store = self._store
        if store is None:
            return None
        folder = self._dir(segment.recording.recording_id, segment.index)
        done = self._done(segment)
        try:
            if not store.exists(done):
                return None
            doc = json.loads(self._read(done))
            rows = []
            for clip_id in doc["clips"]:
                path = f"{folder}/{clip_id}.arrow"
                if not store.exists(path):
                    return None  # killed before the encoder returned it
                rows.extend(self._rows(self._read(path)))
            files = [PublishedFile.from_entry(f) for f in doc["files"]]
            if with_files:
                for f in files:
                    if not store.exists(f.path):
                        return None
                    if hashlib.sha256(store.read(f.path)).hexdigest() != f.sha256:
                        raise CacheEntryRejected("a clip file differs from the one remembered")
        except CacheEntryRejected:
            raise
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
            return None  # a damaged entry is redone, never trusted
        return {"rows": rows, "events": [AuditEvent(**e) for e in doc["events"]],
                "files": files}

    def _rows(self, data: bytes) -> list[LatentRow]:
        table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
        if table.schema.remove_metadata() != latent_schema(self.layout).remove_metadata():
            raise ValueError("cached row has another schema")
        return [LatentRow(**values) for values in table.to_pylist()]
