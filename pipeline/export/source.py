"""The published output an export reads: verified as ``egoveil audit verify`` verifies it,
then read only through what its ``manifest.json`` lists.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from pipeline.audit_append import check_log
from pipeline.errors import UserError
from pipeline.output_files import UnsafePath, confined
from privacy.audit_chain import check_chain
from privacy.audit_seal import SealSigner
from privacy.audit_verify import verify_output
from privacy.pseudonyms import PseudonymKeyError
from privacy.tombstones import TombstoneError, Tombstones
from schemas.audit import EVENTS_FILE, MANIFEST, RECORD_FILE
from schemas.latents import LatentLayout, shard_metadata
from transforms.discover import normalize_uri
from transforms.stores.filesystems import FileSystemsStore
from transforms.stores.keys import load_key
from transforms.stores.tombstones import read_tombstones


@dataclass(slots=True, frozen=True)
class SourceFile:
    """A shard or clip as the source's manifest lists it."""

    path: str   # relative to the source folder
    sha256: str
    bytes: int
    rows: int | None


@dataclass(slots=True)
class ExportSource:
    """A verified, published egoveil output.

    Attributes:
        uri: the folder (local path or object-store prefix).
        head: the log head that was verified.
    """

    uri: str
    manifest: dict
    record: dict
    entries: list[dict]
    head: str
    tombstones: Tombstones
    shards: list[SourceFile] = field(default_factory=list)
    clips: dict[str, SourceFile] = field(default_factory=dict)

    @property
    def store(self) -> FileSystemsStore:
        return FileSystemsStore(self.uri)

    def path(self, rel: str) -> str:
        return confined(self.uri, rel)

    @property
    def content_sha256(self) -> str | None:
        return self.manifest.get("content_sha256")

    @property
    def source_bytes(self) -> int:
        return sum(f.bytes for f in self.shards) + sum(f.bytes for f in self.clips.values())

    def schema_and_layout(self):
        """The shards' Arrow schema and latent layout (from the first shard's footer)."""
        if not self.shards:
            raise UserError("DIR holds no latent shards; nothing to export")
        with self.store.open(self.shards[0].path) as handle:
            schema = pq.read_schema(handle)
        return schema, LatentLayout.from_metadata(shard_metadata(schema))


def open_source(directory: str, action: str = "exported", *, verify: bool = True,
                expect_head: str | None = None) -> ExportSource:
    """Verify a published output and read its manifest, record, log and tombstones.

    Args:
        directory: the output folder.
        action: what the refusal says was not done.
        verify: run every check of ``egoveil audit verify`` first. Without it (a
            folder verified earlier in the same command, re-read under its lock),
            ``expect_head`` must be the head that was verified.
        expect_head: the log head the folder must still have.

    Raises:
        UserError: not a folder, not published, or anything ``egoveil audit verify``
            checks does not hold (the first problem is named), or the head moved.
    """
    uri = normalize_uri(directory)
    if "://" not in uri and not os.path.isdir(uri):
        raise UserError("DIR is not a folder; give a published egoveil output folder")
    store = FileSystemsStore(uri)
    if not store.exists(MANIFEST):
        raise UserError(f"DIR has no manifest.json: it is not a published egoveil output; "
                        f"nothing was {action}")
    head = expect_head
    if verify:
        report = verify_output(store)
        if not report.ok:
            raise UserError(f"DIR does not verify ({report.findings[0]}); `egoveil audit "
                            f"verify DIR` says more; nothing was {action}")
        head = report.head
    try:
        manifest = json.loads(store.read(MANIFEST))
        record = json.loads(store.read(RECORD_FILE))
        chain = check_chain(store.read(EVENTS_FILE))
        entries = chain.entries
        tombstones = read_tombstones(uri)
        shards, clips = [], {}
        for entry in sorted(manifest["files"], key=lambda f: f["path"]):
            confined(uri, entry["path"])
            item = SourceFile(entry["path"], entry["sha256"], int(entry["bytes"]),
                              entry.get("rows"))
            if entry["kind"] == "latents":
                shards.append(item)
            elif entry["kind"] == "clip":
                clips[entry["path"].rsplit("/", 1)[-1].split(".", 1)[0]] = item
    except (UnsafePath, TombstoneError) as exc:
        raise UserError(f"DIR: {exc}; nothing was {action}") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"DIR's manifest, record or log cannot be read; nothing was "
                        f"{action}") from None
    if not chain.ok or chain.head != head:
        raise UserError(f"DIR changed while it was being {action} (its audit log moved on); "
                        "nothing was recorded: run the command again")
    return ExportSource(uri=uri, manifest=manifest, record=record, entries=entries,
                        head=chain.head, tombstones=tombstones, shards=shards, clips=clips)


def owner_signer(key_file: str | None, source: ExportSource, action: str = "exported") -> \
        SealSigner:
    """The audit key of DIR's owner, which signs the seal that records an export or sync.

    Raises:
        UserError: no usable key, or not the key DIR was written with.
    """
    try:
        key = load_key(key_file)
    except PseudonymKeyError as exc:
        raise UserError(str(exc)) from None
    if not key.names(source.record.get("key_id")):
        raise UserError(f"the key given (key id {key.key_id}) is not the key DIR was written "
                        f"with (key id {source.record.get('key_id')}); only that key signs "
                        f"DIR's audit log. Pass it with --key-file; nothing was {action}")
    signer = key.seal_signer()
    check_log(source.uri, signer)
    return signer
