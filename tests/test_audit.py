"""The audit trail's parts on their own: hash chain, append API, path scrubbing, outcome
counts, and the data contract on shards the test writes with the pipeline's own writer."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pyarrow as pa
import pytest

from privacy.audit_chain import check_chain, entry_hash, files_digest, make_entry
from privacy.audit_log import (
    AuditLog,
    AuditLogBroken,
    AuditLogForeign,
    file_entry,
    record_operation,
)
from privacy.audit_record import scrub_paths
from privacy.audit_seal import SealKey, SealKeyError, seal_signer_key
from privacy.audit_summary import count_outcomes
from privacy.data_contract import DataContract, ShardSource
from privacy.pseudonyms import PseudonymKey
from schemas.audit import EVENTS_FILE, GENESIS, MANIFEST, PATH_LIKE_REGEX
from schemas.elements import LatentRow
from schemas.latents import latent_schema
from transforms.stores.filesystems import FileSystemsStore
from transforms.stores.shards import rows_to_table

RUN = "0123456789abcdef"
REC = "ab" * 16


def _log(n: int = 6) -> AuditLog:
    log = AuditLog()
    for i in range(n):
        log.append("segment_anonymized", op="run", op_id=RUN, at="2026-05-01T10:00:00+00:00",
                   recording_id=REC, segment_index=i, counts={"faces_detected": i})
    return log


def _lines(log: AuditLog) -> list[bytes]:
    return log.to_bytes().splitlines(keepends=True)


def test_a_clean_chain_holds_and_links_every_entry():
    log = _log()
    check = check_chain(log.to_bytes())
    assert check.ok and len(check.entries) == 6 and check.head == log.head
    assert log.entries[0]["prev"] == GENESIS
    for before, after in zip(log.entries, log.entries[1:]):
        assert after["prev"] == before["hash"] == entry_hash(before)
    assert check_chain(b"").ok and check_chain(b"").head == GENESIS


def _flip(lines, i):
    line = bytearray(lines[i])
    at = line.index(b'"faces_detected":') + len(b'"faces_detected":')
    line[at] ^= 0x01  # a digit becomes another digit: still JSON, different content
    return lines[:i] + [bytes(line)] + lines[i + 1:]


@pytest.mark.parametrize("tamper, line, problem", [
    (lambda ls: _flip(ls, 2), 3, "hash does not match"),
    (lambda ls: ls[:1] + ls[2:], 2, "seq is 2, expected 1"),
    (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], 2, "seq is 2, expected 1"),
    (lambda ls: ls[:3] + [ls[3][:-20] + b"\n"] + ls[4:], 4, "not a JSON object"),
    (lambda ls: ls[:2] + [b"{}\n"] + ls[2:], 3, "fields differ"),
])
def test_the_checker_names_the_first_broken_entry(tamper, line, problem):
    check = check_chain(b"".join(tamper(_lines(_log()))))
    assert not check.ok
    assert check.line == line and problem in check.problem
    assert check.where() == f"line {line} (seq {line - 1})"
    assert len(check.entries) == line - 1


def test_an_entry_rewritten_with_its_own_hash_still_breaks_the_next_link():
    log = _log()
    forged = dict(log.entries[2], counts={"faces_detected": 99})
    forged["hash"] = entry_hash(forged)
    lines = _lines(log)
    lines[2] = json.dumps(forged, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    check = check_chain(b"".join(lines))
    assert check.line == 4 and "prev does not match" in check.problem


def test_append_api_reseals_and_refuses_a_broken_log(tmp_path):
    store = FileSystemsStore(str(tmp_path))
    store.write("latents/part-00000.parquet", b"shard")
    manifest = {"run_id": RUN, "files": [file_entry("latents/part-00000.parquet", b"shard",
                                                    "latents", None)]}
    signer = PseudonymKey.generate().seal_signer()
    written = record_operation(store, manifest, op="erase", op_id="fedcba9876543210",
                               events=[{"kind": "erasure", "counts": {"rows": 3}}],
                               signer=signer, at="2026-05-02T10:00:00+00:00")
    log = AuditLog.load(store)
    assert [e["kind"] for e in log.entries] == ["erasure", "files_sealed"]
    assert written["audit"] == {"log": EVENTS_FILE, "head": log.head, "entries": 2,
                                "audit_key": signer.public.fingerprint}
    assert log.entries[-1]["counts"]["files_sha256"] == files_digest(manifest["files"])
    assert seal_signer_key(log.entries[-1]) == (signer.public, None)
    assert json.loads(store.read(MANIFEST)) == written
    assert {f["path"] for f in written["files"]} == {"latents/part-00000.parquet", EVENTS_FILE}

    before = store.read(MANIFEST)
    with pytest.raises(AuditLogForeign, match="sealed with another audit key"):
        record_operation(store, written, op="erase", op_id="fedcba9876543211",
                         events=[{"kind": "erasure"}],
                         signer=PseudonymKey.generate().seal_signer())
    store.write(EVENTS_FILE, b"".join(_lines(log)[1:]))
    with pytest.raises(AuditLogBroken, match=r"audit/events.jsonl line 1 \(seq 0\)"):
        record_operation(store, written, op="erase", op_id="fedcba9876543210",
                         events=[{"kind": "erasure"}], signer=signer)
    assert store.read(MANIFEST) == before and json.loads(before) == written


def test_a_seal_holds_only_as_signed():
    signer = PseudonymKey.generate().seal_signer()
    log = _log(2)
    entry = log.seal(signer, op="run", op_id=RUN, counts={"files": 1, "files_sha256": "a" * 64})
    assert check_chain(log.to_bytes()).ok
    assert seal_signer_key(entry) == (signer.public, None)
    # Any change to what it covers, even rehashed so that the chain holds, breaks it.
    for changed in (dict(entry, counts=dict(entry["counts"], files_sha256="b" * 64)),
                    dict(entry, prev="0" * 64), dict(entry, op_id="f" * 16)):
        changed["hash"] = entry_hash(changed)
        key, problem = seal_signer_key(changed)
        assert key is None and "signature does not hold" in problem
    unsigned = make_entry(entry["prev"], entry["seq"], at=entry["at"], op="run", op_id=RUN,
                          kind="files_sealed", counts={"files": 1, "files_sha256": "a" * 64})
    assert seal_signer_key(unsigned)[1].startswith("the seal is not signed")
    with pytest.raises(TypeError):
        pickle.dumps(signer)
    public = SealKey.from_pem(signer.public.to_pem())
    assert public == signer.public and len(public.fingerprint) == 32
    for bad, message in ((b"ab" * 32 + b"\n", "secret key"), (b"hello", "not a public")):
        with pytest.raises(SealKeyError, match=message):
            SealKey.from_pem(bad)


def test_files_digest_ignores_order_but_not_content():
    files = [{"path": "b", "sha256": "1", "kind": "x", "bytes": 1, "rows": 1},
             {"path": "a", "sha256": "2", "kind": "x", "bytes": 1, "rows": None}]
    assert files_digest(files) == files_digest(files[::-1])
    assert files_digest(files) != files_digest([dict(files[0], rows=2), files[1]])


@pytest.mark.parametrize("value, scrubbed", [
    ("yunet:path=/home/someone/models/yunet.onnx", "yunet:path=yunet.onnx"),
    ("centerface:threshold=0.1+yunet:path=models/y.onnx;threshold=0.3",
     "centerface:threshold=0.1+yunet:path=y.onnx;threshold=0.3"),
    ("yunet:path=C:\\Users\\someone\\y.onnx", "yunet:path=y.onnx"),
    ("centerface", "centerface"),
    ("2026-05-01T10:00:00Z", "2026-05-01T10:00:00Z"),
    ("random:vjepa2-tiny", "random:vjepa2-tiny"),
])
def test_settings_keep_file_names_not_paths(value, scrubbed):
    assert scrub_paths({"detector": value, "n": 1, "l": [value]}) == \
        {"detector": scrubbed, "n": 1, "l": [scrubbed]}


@pytest.mark.parametrize("text, is_path", [
    ("/home/alice/walk.mp4", True), ("cannot open '/data/raw/x.mov'", True),
    ("gs://bucket/raw/x.mp4", True), ("~/x.mp4", True), ("C:\\videos\\x.mp4", True),
    ("latents/part-00000.parquet", False), ("not a supported container (MP4/MOV, AVI)", False),
    ("2026-05-01T10:00:00+00:00", False), ("random:vjepa2-tiny", False),
    ('{"reason":"withdrawn"}', False),
])
def test_what_counts_as_a_path(text, is_path):
    assert bool(re.search(PATH_LIKE_REGEX, text)) is is_path


def test_outcomes_count_inputs_segments_and_consent():
    events = [
        {"kind": "recording_admitted", "recording_id": REC, "counts": {"duration_s": 60.0}},
        {"kind": "verification_failed", "recording_id": REC, "segment_index": 0,
         "counts": {"pass": "first", "frames_checked": 2, "output_faces": 1}},
        {"kind": "segment_anonymized", "recording_id": REC, "segment_index": 0,
         "counts": {"faces_detected": 30, "boxes_redacted": 50, "frames_decoded": 100,
                    "qa_status": "reredacted_verified", "verify_frames_checked": 4,
                    "verify_faces_checked": 6, "verify_output_faces": 0,
                    "verify_linkable_faces": 0}},
        {"kind": "segment_failed", "recording_id": REC, "segment_index": 1,
         "counts": {"reason": "verification_failed"}},
        {"kind": "consent_excluded", "counts": {"reason": "withdrawn"}},
        {"kind": "consent_excluded", "counts": {"reason": "no_grant_for_purpose"}},
        {"kind": "duplicate_input", "recording_id": REC},
        {"kind": "erasure", "counts": {"rows": 4}},
    ]
    deadletters = [{"stage": "admit", "reason": "unreadable"},
                   {"stage": "anonymize", "reason": "verification_failed"}]
    out = count_outcomes(events, deadletters)
    assert (out.seen, out.admitted, out.duplicates, out.rejected_at_admission) == (5, 1, 1, 1)
    assert out.anonymized_minutes == pytest.approx(0.5)
    assert out.faces_per_minute == pytest.approx(60.0)
    assert out.consent_coverage == pytest.approx(3 / 5)
    assert out.verification == {"first_pass_failed": 1, "reredacted_verified": 1,
                                "quarantined": 1}
    assert out.verification_checks == {"frames_checked": 4, "faces_checked": 6,
                                       "output_faces": 0, "linkable_faces": 0}
    assert len(out.erasures) == 1
    record = out.to_record()
    assert record["deadletters_by_reason"] == {"unreadable": 1, "verification_failed": 1}
    assert record["consent_excluded_by_reason"] == {"no_grant_for_purpose": 1, "withdrawn": 1}


# ---------------------------------------------------------------- data contract

DIM = 8


def _rows(n: int = 6) -> list[LatentRow]:
    return [LatentRow(
        clip_id=f"{i:032x}", recording_id=REC, wearer_id="cd" * 16, view="rgb",
        segment_index=0, clip_index=i, start_s=i * 1.0, end_s=i * 1.0 + 1.0, frame_count=8,
        fps=15.0, encoder_id="random:test", encoder_pretrained=False,
        embedding=(np.arange(DIM, dtype="<f2") + i).tobytes(), faces_redacted=i,
        qa_status="redacted_unverified") for i in range(n)]


def _record() -> dict:
    return {"run_id": RUN, "purpose": "world-model-training", "consent_checked": True,
            "key_id": "fedcba9876543210", "config_sha256": "c" * 64, "runner": "DirectRunner",
            "started_at": "2026-05-01T10:00:00+00:00",
            "published_at": "2026-05-01T10:01:00+00:00",
            "anonymization": {"detector": "centerface",
                              "redaction": {"mode": "solid", "mask_scale": 1.4}},
            "detector": {"name": "centerface", "threshold": 0.2, "weights_sha256": "d" * 64},
            "encoder": {"encoder_id": "random:test", "pretrained": False, "embedding_dim": DIM,
                        "weights_sha256": None},
            "caps": {"max_duration_s": 3600.0},
            "totals": {"latent_rows": 6}, "outcomes": {"faces_detected": 3}}


def _validate(table: pa.Table, deadletters=(), record=None, log=None):
    return DataContract(record or _record()).validate(
        [ShardSource("latents/part-00000.parquet", 6, lambda: table)], list(deadletters),
        (log or _log(3)).entries)


def _failed(result) -> set[tuple[str, str, str]]:
    return {(b.suite, e["type"], e["column"] or ",".join(e["columns"] or []) or "table")
            for b in result.batches for e in b.failed}


def test_the_contract_passes_on_well_formed_outputs():
    table = rows_to_table(_rows(), latent_schema(DIM, {"encoder": "random:test"}))
    result = _validate(table, deadletters=[{
        "input_id": "ef" * 16, "stage": "admit", "reason": "unreadable",
        "detail": "not a supported container (MP4/MOV, Matroska/WebM, AVI)",
        "recording_id": None, "segment_index": None}])
    assert result.success, result.first_failure()
    assert {b.suite for b in result.batches} == {
        "latents_fields", "latents_rows", "latents_embeddings", "audit_events",
        "audit_deadletters", "audit_record"}
    assert result.evaluated > 100


def test_the_contract_names_each_broken_promise_and_never_copies_values():
    rows = _rows()
    rows[1].wearer_id = "wearer-alice"                      # a raw identifier, not a pseudonym
    rows[2].start_s, rows[2].end_s = 1_777_000_000.0, 1_777_000_001.0   # wall-clock time
    rows[3].embedding = np.array([np.nan] + [0] * (DIM - 1), dtype="<f2").tobytes()
    rows[4].qa_status = "unchecked"
    schema = latent_schema(DIM, {"encoder": "random:test"})
    table = rows_to_table(rows, schema)
    table = table.append_column("gps_lat", pa.array([48.8584] * len(rows)))
    record = dict(_record(), anonymization={"detector": "centerface",
                                            "redaction": {"mode": "solid", "mask_scale": 1.0}})
    record["detector"] = dict(record["detector"], model_file="/home/alice/models/cf.onnx")
    deadletters = [{"input_id": "ef" * 16, "stage": "admit", "reason": "unreadable",
                    "detail": "cannot open /home/alice/raw/walk.mp4", "recording_id": None,
                    "segment_index": None}]
    log = _log(3)
    log.append("made_up_kind", op="run", op_id=RUN, counts={"path": "/home/alice/raw"})
    result = _validate(table, deadletters, record, log)

    assert not result.success
    failed = _failed(result)
    for expected in [
        ("latents_fields", "expect_table_row_count_to_equal", "table"),
        ("latents_rows", "expect_table_columns_to_match_ordered_list", "table"),
        ("latents_rows", "expect_column_values_to_match_regex", "wearer_id"),
        ("latents_rows", "expect_column_values_to_be_between", "start_s"),
        ("latents_rows", "expect_column_values_to_be_in_set", "qa_status"),
        ("latents_embeddings", "expect_column_values_to_be_in_set", "nonfinite"),
        ("audit_events", "expect_column_values_to_be_in_set", "kind"),
        ("audit_events", "expect_column_values_to_not_match_regex", "counts"),
        ("audit_deadletters", "expect_column_values_to_not_match_regex", "detail"),
        ("audit_record", "expect_column_values_to_be_between",
         "anonymization.redaction.mask_scale"),
        ("audit_record", "expect_column_values_to_not_match_regex", "detector.model_file"),
    ]:
        assert expected in failed, (expected, sorted(failed))
    assert ("latents_rows", "expect_column_values_to_match_regex", "recording_id") not in failed
    page, doc = result.to_html(), result.to_json()
    for value in ("wearer-alice", "/home/alice", "1777000000", "48.8584"):
        assert value not in page and value.encode() not in doc, value
    assert "FAILED" in page and result.first_failure().startswith("latents/part-00000.parquet")


def test_a_null_where_none_is_allowed_fails_the_contract():
    schema = latent_schema(DIM, {"encoder": "random:test"})
    table = rows_to_table(_rows(), schema)
    loose = pa.schema([f.with_nullable(True) for f in schema], metadata=schema.metadata)
    fps = table.column("fps").to_pylist()
    fps[0] = None
    table = pa.Table.from_arrays(
        [pa.array(fps, pa.float32()) if n == "fps" else table.column(n) for n in schema.names],
        schema=loose)
    failed = _failed(_validate(table))
    assert ("latents_rows", "expect_column_values_to_not_be_null", "fps") in failed
    assert ("latents_fields", "expect_column_pair_values_to_be_equal", "nullable,"
            "expected_nullable") in failed


# ---------------------------------------------------------------- classes besides faces


def test_outcomes_count_every_class_and_the_verification_failures_of_each():
    events = [
        {"kind": "recording_admitted", "recording_id": REC, "counts": {"duration_s": 8.0}},
        {"kind": "verification_failed", "recording_id": REC, "segment_index": 0,
         "counts": {"pass": "first", "frames_checked": 2, "output_faces": 0,
                    "linkable_faces": 0, "plate_checked": 3, "output_plate": 1}},
        {"kind": "segment_anonymized", "recording_id": REC, "segment_index": 0,
         "counts": {"faces_detected": 4, "boxes_redacted": 9, "frames_decoded": 100,
                    "qa_status": "reredacted_verified", "verify_frames_checked": 2,
                    "verify_plate_checked": 3, "verify_output_plate": 0,
                    "classes": {"face": {"detected": 4, "redacted": 6, "frames_detected": 30},
                                "plate": {"detected": 2, "redacted": 3,
                                          "frames_detected": 100}}}},
        {"kind": "segment_failed", "recording_id": REC, "segment_index": 1,
         "counts": {"reason": "verification_failed", "pass": "second", "output_faces": 1,
                    "linkable_faces": 0, "plate_checked": 2, "output_plate": 2}},
        # Written before classes existed: faces only.
        {"kind": "segment_anonymized", "recording_id": REC, "segment_index": 2,
         "counts": {"faces_detected": 5, "boxes_redacted": 7, "frames_decoded": 100}},
    ]
    out = count_outcomes(events)
    record = out.to_record()
    assert record["detections_by_class"] == {"face": 9, "plate": 2}
    assert record["boxes_redacted_by_class"] == {"face": 13, "plate": 3}
    assert record["frames_detected_by_class"] == {"face": 30, "plate": 100}
    assert record["verification_failed_by_class"] == {"face": 1, "plate": 2}
    assert out.verification_checks["output_plate"] == 0
    assert out.verification_checks["plate_checked"] == 3


def test_the_contract_checks_every_class_and_that_nothing_failing_was_published():
    table = rows_to_table(_rows(), latent_schema(DIM, {"encoder": "random:test"}))
    record = dict(_record(), classes={
        "face": {"redaction": {"mode": "solid", "mask_scale": 1.4}},
        "plate": {"detector": {"name": "ppocr-plates", "threshold": 0.3},
                  "redaction": {"mode": "smudge", "mask_scale": 1.1}}})
    log = _log(2)
    log.append("segment_anonymized", op="run", op_id=RUN, at="2026-05-01T10:00:00+00:00",
               recording_id=REC, segment_index=2,
               counts={"qa_status": "verified", "verify_output_faces": 0,
                       "verify_output_plate": 1})
    # A quarantined segment's counts are no publication: they name what was found.
    log.append("segment_failed", op="run", op_id=RUN, at="2026-05-01T10:00:00+00:00",
               recording_id=REC, segment_index=3,
               counts={"reason": "verification_failed", "pass": "second", "output_plate": 2})
    failed = _failed(_validate(table, record=record, log=log))
    assert ("audit_record", "expect_column_values_to_be_between",
            "classes.plate.redaction.mask_scale") in failed
    assert ("audit_record", "expect_column_values_to_be_in_set",
            "classes.plate.redaction.mode") in failed
    assert ("audit_events", "expect_column_values_to_not_match_regex", "counts") in failed
    assert ("audit_record", "expect_column_values_to_be_between",
            "classes.face.redaction.mask_scale") not in failed
    clean = _log(2)
    clean.append("segment_failed", op="run", op_id=RUN, at="2026-05-01T10:00:00+00:00",
                 recording_id=REC, segment_index=3,
                 counts={"reason": "verification_failed", "pass": "second", "output_plate": 2})
    assert _validate(table, log=clean).success


def test_the_report_reads_a_record_written_before_classes_as_faces():
    from pipeline.audit_report import record_classes

    old = _record()
    assert record_classes(old) == {"face": {"detector": old["detector"],
                                            "redaction": old["anonymization"]["redaction"],
                                            "temporal_window": None}}
    new = dict(old, classes={"face": {"detector": {"name": "centerface"}},
                             "plate": {"detector": {"name": "ppocr-plates"}}})
    assert list(record_classes(new)) == ["face", "plate"]
