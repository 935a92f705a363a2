"""The audit side of publishing a run: record, hash-chained log, data-contract gate.

``transforms.publish`` calls it in this order (write, audit, publish; PRIVACY.md
13-15, 18): build the record and chain the run's events onto the folder's log,
in memory; run the data contract on the staged shards, the dead letters, the log
and the record; only if it passes, publish the files, then seal the file list
into the log and write ``manifest.json`` naming the log's head. A run whose
contract fails publishes nothing: its results, record and shards stay in its
staging folder. The seal, and the ``PUBLISHING`` note that names the files a run
is about to move in, are signed with the run's audit key (``privacy.audit_seal``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from privacy.audit_log import AuditLog, file_entry, seal_and_write
from privacy.audit_seal import SealSigner, signed_note
from privacy.audit_summary import count_outcomes
from privacy.data_contract import ContractResult, DataContract, ShardSource
from schemas.audit import RECORD_FILE, VALIDATION_HTML, VALIDATION_JSON
from transforms.stores.filesystems import FileSystemsStore

CONTRACT_FAILED_JSON = "validation.json"  # under the run's staging folder
CONTRACT_FAILED_HTML = "validation.html"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def staged_shard_loader(path: str):
    def load():
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            return pq.read_table(handle)
    return load


@dataclass(slots=True)
class RunAudit:
    """Everything a run adds to its output folder's audit trail.

    Args:
        store: the output folder.
        base_record: the record built by the launcher (``pipeline.runner.prepare``).
        events: the run's audit events, as dicts.
        deadletters: the run's dead letters, as dicts.
        totals: published rows, shards, clips and dead letters.
        signer: the audit key that signs the seal (derived from the pseudonym key).

    Raises:
        AuditLogBroken, AuditLogForeign: the folder's log does not verify, or was
            sealed with another key.
    """

    store: FileSystemsStore
    base_record: dict
    events: list[dict]
    deadletters: list[dict]
    totals: dict
    signer: SealSigner
    log: AuditLog | None = None
    base_head: str | None = None
    record: dict | None = None
    contract: ContractResult | None = None

    def __post_init__(self) -> None:
        run_id = self.base_record["run_id"]
        at = _now()
        outcomes = count_outcomes(self.events, self.deadletters)
        self.record = dict(self.base_record, totals=self.totals,
                           outcomes=outcomes.to_record(), published_at=at,
                           audit_key=self.signer.public.fingerprint)
        self.log = AuditLog.load(self.store)
        self.log.check_sealed_by(self.signer.public)
        self.base_head = self.log.head
        self.log.extend(self.events, op="run", op_id=run_id, at=at)
        self.log.extend(({"kind": "deadletter", "recording_id": d.get("recording_id"),
                          "segment_index": d.get("segment_index"),
                          "counts": {"stage": d["stage"], "reason": d["reason"]}}
                         for d in self.deadletters), op="run", op_id=run_id, at=at)

    def check(self, shards: list[ShardSource]) -> ContractResult:
        """Run the data contract on what is about to be published."""
        self.contract = DataContract(self.record).validate(shards, self.deadletters,
                                                          self.log.entries)
        return self.contract

    def publishing_note(self, files: list[dict]) -> bytes:
        """The signed note naming the files this run is about to move in."""
        note = signed_note(self.record["run_id"], self.base_head, files, self.signer)
        return json.dumps(note, sort_keys=True).encode()

    def keep_failure(self, staging_dir: str) -> None:
        """Leave the contract's results and the record beside the staged shards."""
        for name, data in ((CONTRACT_FAILED_JSON, self.contract.to_json()),
                           (CONTRACT_FAILED_HTML, self.contract.to_html().encode()),
                           ("record.json", self._record_bytes())):
            path = FileSystems.join(staging_dir, name)
            with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as out:
                out.write(data)

    def _record_bytes(self) -> bytes:
        return json.dumps(self.record, indent=2, sort_keys=True).encode() + b"\n"

    def write_files(self) -> list[dict]:
        """Write the record and the contract's results; their manifest entries."""
        entries = []
        for rel, data, kind in ((RECORD_FILE, self._record_bytes(), "audit_record"),
                                (VALIDATION_JSON, self.contract.to_json(), "audit_validation"),
                                (VALIDATION_HTML, self.contract.to_html().encode(),
                                 "audit_validation")):
            self.store.write(rel, data)
            entries.append(file_entry(rel, data, kind, None))
        return entries

    def seal(self, manifest: dict, files: list[dict]) -> dict:
        """Chain the record and the contract's outcome, seal ``files``, write the log and
        ``manifest.json``. Returns the manifest as written."""
        run_id, at = self.record["run_id"], self.record["published_at"]
        by_path = {f["path"]: f for f in files}
        record = self.record
        self.log.append("run_record", op="run", op_id=run_id, at=at, counts={
            "record_sha256": by_path[RECORD_FILE]["sha256"], "purpose": record["purpose"],
            "key_id": record["key_id"], "audit_key": record["audit_key"],
            "config_sha256": record["config_sha256"],
            "consent_checked": record["consent_checked"],
            "detector": record["detector"].get("name"),
            "encoder_id": record["encoder"].get("encoder_id"),
            "encoder_pretrained": record["encoder"].get("pretrained"),
            "encoder_weights_sha256": record["encoder"].get("weights_sha256")})
        self.log.append("contract_validated", op="run", op_id=run_id, at=at, counts={
            **self.contract.summary(),
            "validation_sha256": by_path[VALIDATION_JSON]["sha256"]})
        return seal_and_write(self.store, dict(manifest, files=files), self.log, op="run",
                              op_id=run_id, signer=self.signer, at=at)
