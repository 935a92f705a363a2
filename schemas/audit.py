"""The audit trail's layout and vocabularies: file names, log entry fields, event kinds, id formats.

Every output folder holds one hash-chained event log (``audit/events.jsonl``) that
runs, erasures and later operations append to, the record of processing of the
run that last published the folder (``audit/record.json``), and that run's
data-contract results. ``manifest.json`` lists every file with its sha256 and row
count, and names the log's head so that the log and the files check each other.
"""

from __future__ import annotations

MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"
DEADLETTER_FILE = "deadletter/deadletters.jsonl"
EVENTS_FILE = "audit/events.jsonl"
RECORD_FILE = "audit/record.json"
VALIDATION_JSON = "audit/validation.json"
VALIDATION_HTML = "audit/validation.html"

# Work areas that never belong to a published state (a run's staging, a crashed
# run's leftovers, the finished-segment cache); verification ignores them and
# nothing else.
WORK_PREFIXES = (".staging/", ".cache/")
# The output's lock (``pipeline.output_lock``): one run or erasure at a time. It is
# there only while one holds it, and is no published file.
OUTPUT_LOCK = ".lock"
# In a run's staging folder while it publishes: the shards and clips it is about to move
# in. Files a publish cut short left behind are named there; any other unlisted file is
# not.
PUBLISHING = "PUBLISHING"

# manifest.json "kind" of each published file; "rows" means what the kind counts.
FILE_KINDS = {
    "latents": "Parquet latent shard; rows = shard rows",
    "clip": "anonymized clip video; rows = video frames",
    "deadletter": "dead letters, JSON Lines; rows = lines",
    "audit_events": "the hash-chained event log, JSON Lines; rows = entries",
    "audit_record": "the record of processing of the publishing run",
    "audit_validation": "data-contract results of the publishing run",
    "erasure_tombstones": "pseudonyms erased from this folder, which runs must not bring back",
}

GENESIS = "0" * 64
HASH_DOMAIN = b"egoveil-audit-log-v1\n"

# Fields of one log entry, in the order they are written. ``hash`` is the sha256
# of HASH_DOMAIN followed by the canonical JSON of every other field, so each
# entry commits to the one before it through ``prev``.
LOG_FIELDS = ("seq", "prev", "at", "op", "op_id", "kind", "recording_id", "segment_index",
              "counts", "hash")

# Who appends to the log.
OPERATIONS = ("run", "erase", "export")

# Event kinds: a closed vocabulary, so that reports can count them and the data
# contract rejects a misspelt kind. Counts hold numbers and vocabulary words only.
EVENT_KINDS = {
    # per recording / segment, emitted by the pipeline stages
    "recording_admitted": "a consented recording was probed and pseudonymized "
                          "(counts: duration_s, fps)",
    "consent_excluded": "a recording without valid consent was counted and never opened "
                        "(counts: reason)",
    "duplicate_input": "the same content was delivered twice and processed once",
    "manifest_conflict": "manifest lines naming the same file disagreed; it was not processed "
                         "(counts: lines, fields)",
    "vrs_streams": "a Project Aria VRS file's streams: the allow-listed ones read and the rest "
                   "dropped unread (counts: streams_listed, streams_read, streams_dropped, by "
                   "stream id)",
    "erasure_excluded": "a recording erased from this folder was delivered again and skipped "
                        "(counts: match, wearer or recording)",
    "segment_anonymized": "a segment was decoded, detected, redacted and verified (counts: "
                          "frames_decoded, frames_emitted, faces_detected, boxes_redacted, clips, "
                          "classes (detected, redacted and frames_detected by class), "
                          "qa_status, verify_frames_checked, verify_faces_checked, "
                          "verify_output_faces, verify_linkable_faces)",
    "segment_cached": "a segment finished by an earlier run of the same configuration into "
                      "this folder was reused from OUTPUT/.cache (its events are repeated)",
    "segment_cache_rejected": "a finished segment in OUTPUT/.cache was changed after it was "
                              "written (its MAC does not hold) and was done again (counts: "
                              "reason)",
    "segment_failed": "a segment produced nothing (counts: reason; verification_failed means "
                      "quarantined)",
    "verification_failed": "a segment's first redaction failed verification and was redacted "
                           "again (counts: pass, and what was checked)",
    "deadletter": "an input or segment became a dead letter (counts: stage, reason)",
    # per operation, written when it publishes
    "run_record": "the record of processing of a run (counts: record_sha256 and its key facts)",
    "contract_validated": "the data contract ran on what is published (counts: success, "
                          "expectations, failed, validation_sha256)",
    "erasure": "rows, clips or recordings were erased (counts: what and how many)",
    "export": "the folder's rows were exported as a dataset (counts: export_id, format, rows, "
              "files, splits, rows_sha256, lineage_sha256, content_sha256 of what was read)",
    "export_synced": "an export was brought in line with this folder's erasures (counts: "
                     "export_id, rows_removed, files_rewritten, erasures_applied)",
    "files_sealed": "the published file list at this point, signed with the folder owner's "
                    "audit key (counts: files, files_sha256, seal_key, signature); "
                    "manifest.json must match the last one",
}

# Formats of the identifiers that may appear in audit files and shards.
PSEUDONYM_REGEX = r"^[0-9a-f]{32}$"     # keyed pseudonyms and clip ids (128 bits, hex)
SHA256_REGEX = r"^[0-9a-f]{64}$"
RUN_ID_REGEX = r"^[0-9a-f]{16}$"
KEY_ID_REGEX = r"^[0-9a-f]{16}$"
# What a local or remote path looks like inside a free-text field: absolute POSIX
# paths with two or more parts, home-relative paths, Windows drives and URLs.
PATH_LIKE_REGEX = r"(?:^|[\s'\"=:(,])(?:/[^/\s]+/[^\s]+|~/|[A-Za-z]:\\|[a-z][a-z0-9+.-]*://)"
