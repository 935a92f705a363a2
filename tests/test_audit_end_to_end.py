"""The audit trail of real runs: record, chained log, contract gate, ``audit verify`` against
tampering, ``validate``, and the auditor's report checked in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipeline.samples import Sticker, make_recording, make_scene_recording, plate_patch
from privacy.audit_chain import check_chain, entry_line, files_digest, make_entry
from privacy.audit_seal import seal_signer_key, sign_seal, signed_note
from privacy.pseudonyms import PseudonymKey
from schemas.audit import EVENTS_FILE, GENESIS
from tests.cli import egoveil

FPS = 15
RAW = (b"wearer-alice", b"wearer-bob", b"EG1-SN-0042", b"walk alice", b"street_bob",
       b"broken.mp4", b"48.8584")


@dataclass
class Published:
    out: Path
    inputs: Path
    argv: list[str]
    boxes: list
    stderr: str
    plates: list


@pytest.fixture(scope="module")
def published(tmp_path_factory, key_file, tiny_encoder) -> Published:
    """One real run with the default classes: a consented recording with faces and a
    licence plate, a withdrawn wearer, a broken file."""
    root = tmp_path_factory.mktemp("audited")
    inputs = root / "inputs"
    inputs.mkdir()
    # The plate sits low in the scene, below the faces' paths.
    drawn = make_scene_recording(str(inputs / "walk alice.mp4"), seconds=2.0, fps=FPS,
                                 stickers=(Sticker("plate", plate_patch("KA 482 TB", 30),
                                                   at=(0.62, 0.92)),))
    make_recording(str(inputs / "street_bob.mov"), seconds=1.0, fps=FPS, seed=1)
    (inputs / "broken.mp4").write_bytes(os.urandom(4096))
    lines = [{"uri": "walk alice.mp4", "wearer_id": "wearer-alice",
              "device_serial": "EG1-SN-0042", "location": {"lat": 48.8584, "lon": 2.2945}},
             {"uri": "street_bob.mov", "wearer_id": "wearer-bob"},
             {"uri": "broken.mp4", "wearer_id": "wearer-alice"}]
    (inputs / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (inputs / "consent.csv").write_text(
        "wearer_id,purpose,granted_at,withdrawn_at\n"
        "wearer-alice,world-model-training,2026-01-01T00:00:00Z,\n"
        "wearer-bob,world-model-training,2026-01-01T00:00:00Z,2026-02-01T00:00:00Z\n")
    argv = ["run", "--manifest", str(inputs / "manifest.jsonl"), "--consent",
            str(inputs / "consent.csv"), "--key-file", key_file, "--encoder", tiny_encoder,
            "--clips", "--no-progress", "--max-failure-rate", "1"]  # the bad input is on purpose
    out = root / "out"
    result = egoveil(*argv, "--output", str(out))
    assert result.returncode == 0, result.stderr
    return Published(out, inputs, argv, drawn["face"], result.stderr, drawn["plate"])


@pytest.fixture
def copy(published, tmp_path) -> Path:
    """A copy of the published folder to tamper with."""
    dest = tmp_path / "copy"
    shutil.copytree(published.out, dest)
    return dest


def _entries(out: Path) -> list[dict]:
    check = check_chain((out / EVENTS_FILE).read_bytes())
    assert check.ok, check.problem
    return check.entries


def test_the_run_records_its_processing(published, key):
    out = published.out
    record = json.loads((out / "audit" / "record.json").read_text())
    assert record["purpose"] == "world-model-training" and record["consent_checked"] is True
    assert record["key_id"] == key.key_id
    assert record["audit_key"] == key.seal_signer().public.fingerprint
    assert re.fullmatch(r"[0-9a-f]{64}", record["detector"]["weights_sha256"])
    assert record["detector"]["threshold"] > 0 and record["anonymization"]["redaction"] == \
        {"mode": "solid", "mask_scale": 1.4, "pixel_blocks": 4}
    assert record["caps"]["max_duration_s"] > 0 and record["encoder"]["weights_sha256"]
    verification = record["verification"]
    assert verification["enabled"] and verification["verifier"]["name"]
    for model in ("face_encoder", "face_landmarks"):
        assert re.fullmatch(r"[0-9a-f]{64}", verification[model]["weights_sha256"])
    outcomes = record["outcomes"]
    assert (outcomes["recordings_seen"], outcomes["recordings_admitted"],
            outcomes["recordings_consent_excluded"], outcomes["recordings_rejected"]) == \
        (3, 1, 1, 1)
    assert outcomes["consent_excluded_by_reason"] == {"withdrawn": 1}
    assert outcomes["deadletters_by_reason"] == {"unreadable": 1}
    assert outcomes["faces_detected"] > 0 and outcomes["segments_anonymized"] >= 1
    assert sum(outcomes["segments_by_verification"].values()) >= outcomes["segments_anonymized"]
    assert outcomes["verification_checks"]["frames_checked"] >= 1
    assert outcomes["video_seconds_admitted"] == pytest.approx(2.0, abs=0.1)
    # Plates beside faces by default, each class with its detector, policy and counts.
    assert list(record["classes"]) == ["face", "plate"]
    plates = record["classes"]["plate"]
    assert plates["detector"]["class"] == "plate" and plates["schedule"]["every"] > 1
    assert all(re.fullmatch(r"[0-9a-f]{64}", m["weights_sha256"])
               for m in plates["detector"]["members"])
    assert record["anonymization"]["other_classes"][0]["detection_class"] == "plate"
    assert set(verification["classes"]) == {"plate"}
    assert outcomes["detections_by_class"]["plate"] > 0
    assert 0 < outcomes["frames_detected_by_class"]["plate"] < \
        outcomes["frames_detected_by_class"]["face"] <= outcomes["frames_decoded"]
    assert outcomes["verification_checks"]["plate_checked"] >= 1
    assert outcomes["verification_checks"]["output_plate"] == 0
    assert "plate detections redacted" in published.stderr

    entries = _entries(out)
    kinds = [e["kind"] for e in entries]
    assert kinds[-3:] == ["run_record", "contract_validated", "files_sealed"]
    assert {"recording_admitted", "consent_excluded", "segment_anonymized", "deadletter"} \
        <= set(kinds)
    assert {e["op_id"] for e in entries} == {record["run_id"]}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["audit"]["head"] == entries[-1]["hash"]
    assert manifest["audit"]["audit_key"] == record["audit_key"]
    assert seal_signer_key(entries[-1]) == (key.seal_signer().public, None)
    sealed = [f for f in manifest["files"] if f["path"] != EVENTS_FILE]
    assert entries[-1]["counts"]["files_sha256"] == files_digest(sealed)
    listed = {f["path"] for f in manifest["files"]}
    assert {"audit/record.json", "audit/validation.json", "audit/validation.html",
            EVENTS_FILE, "deadletter/deadletters.jsonl"} <= listed
    validation = json.loads((out / "audit" / "validation.json").read_text())
    assert validation["success"] and validation["failed"] == 0
    assert entries[-2]["counts"]["success"] is True
    assert f"audit log head {entries[-1]['hash']}" in published.stderr


def test_the_default_classes_paint_the_plate_in_every_clip_frame(published, tmp_path):
    import av

    clips = sorted((published.out / "clips").glob("*.mp4"))
    checked = 0
    for clip in clips:
        with av.open(str(clip)) as container:
            for frame in container.decode(video=0):
                (box,) = published.plates[round(frame.time * FPS)]
                x1, y1, x2, y2 = box
                region = frame.to_ndarray(format="rgb24")[y1:y2, x1:x2].astype(int)
                assert (np.abs(region - 128) <= 12).all(axis=-1).mean() > 0.95, clip.name
                checked += 1
    assert checked >= 20
    # The report counts each class.
    report = tmp_path / "report.html"
    result = egoveil("audit", "report", str(published.out), "--html", str(report))
    assert result.returncode == 0, result.stderr
    assert re.search(r"detections by class: face \d+, plate [1-9]\d*", result.stdout)
    assert "verification failures by class: none" in result.stdout
    page = report.read_text()
    assert "plate detections redacted" in page and "ppocr-plates" in page
    assert "plate regions its own detector found, uncovered, between its keyframes" in page
    # Faces' coarse keyframes are described; plates' schedule has none.
    assert page.count("at full resolution at least every 8 frames, at 0.75 of it between") == 1
    # Plates' boxes follow the motion between their keyframes; faces' do not.
    assert page.count("boxes carried between keyframes along the measured motion") == 1
    # Plates' keyframes are set in seconds of video.
    assert page.count("at least every 0.6 s of video and every 16 frames") == 1


def test_no_personal_data_in_any_output(published, key_file, tmp_path):
    report = tmp_path / "report.html"
    result = egoveil("audit", "report", str(published.out), "--html", str(report))
    secret = Path(key_file).read_bytes().strip()
    files = [p for p in published.out.rglob("*") if p.is_file()] + [report]
    for path in files:
        data = path.read_bytes()
        for raw in (*RAW, secret, str(published.inputs).encode()):
            assert raw not in data, (path, raw)
    for raw in RAW:
        assert raw.decode() not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def public_key(key, tmp_path_factory) -> str:
    """The owner's public audit key, as `egoveil keygen` writes it beside the key."""
    path = tmp_path_factory.mktemp("auditor") / "egoveil.key.pub"
    path.write_bytes(key.seal_signer().public.to_pem())
    return str(path)


def test_verify_passes_on_what_the_run_published(published, public_key, key_file, key):
    result = egoveil("audit", "verify", str(published.out))
    assert result.returncode == 0, result.stderr
    head = _entries(published.out)[-1]["hash"]
    fingerprint = key.seal_signer().public.fingerprint
    assert "audit verify: OK" in result.stdout and head in result.stdout
    assert f"seals signed with audit key {fingerprint}; pass the owner's" in result.stdout
    as_json = json.loads(egoveil("audit", "verify", str(published.out), "--json").stdout)
    assert as_json["ok"] and as_json["head"] == head and as_json["findings"] == []
    assert as_json["audit_key"] == fingerprint and as_json["key_checked"] is False
    checked = egoveil("audit", "verify", str(published.out), "--key-file", public_key,
                  "--expect-head", head)
    assert checked.returncode == 0, checked.stderr
    assert f"every seal was made with the audit key given ({fingerprint})" in checked.stdout
    # An auditor holds no secret: the key file itself is refused.
    refused = egoveil("audit", "verify", str(published.out), "--key-file", key_file)
    assert refused.returncode == 2 and "this is a secret key" in refused.stderr


def _lines(out: Path) -> list[bytes]:
    return (out / EVENTS_FILE).read_bytes().splitlines(keepends=True)


def _set_lines(out: Path, lines: list[bytes]) -> None:
    (out / EVENTS_FILE).write_bytes(b"".join(lines))


def _flip_byte(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x20
    path.write_bytes(bytes(data))


def _flip_a_bit_in_line_3(out: Path) -> None:
    lines = _lines(out)
    assert b'"at":"2' in lines[2]
    lines[2] = lines[2].replace(b'"at":"2', b'"at":"3', 1)  # '2' ^ 0x01 == '3'
    _set_lines(out, lines)


def _first_clip(out: Path) -> Path:
    return sorted((out / "clips").glob("*.mp4"))[0]


def _edit_manifest_rows(out: Path) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    shard = next(f for f in manifest["files"] if f["kind"] == "latents")
    shard["rows"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _first_shard(out):
    """The first published shard (names carry a content hash: part-00000-<hash>.parquet)."""
    return next((out / "latents").glob("part-00000-*.parquet"))


TAMPERING = {
    "flip a byte in the log": (_flip_a_bit_in_line_3,
                               "audit/events.jsonl line 3 (seq 2): hash does not match"),
    "delete a log line": (lambda out: _set_lines(out, _lines(out)[:1] + _lines(out)[2:]),
                          "audit/events.jsonl line 2 (seq 1)"),
    "reorder log lines": (
        lambda out: _set_lines(out, [_lines(out)[0], _lines(out)[2], _lines(out)[1],
                                     *_lines(out)[3:]]),
        "audit/events.jsonl line 2 (seq 1)"),
    "delete the last log line": (lambda out: _set_lines(out, _lines(out)[:-1]),
                                 "audit/events.jsonl line {n}"),
    "flip a byte in a shard": (lambda out: _flip_byte(_first_shard(out)),
                               "latents/{shard}: sha256 differs"),
    "delete a shard": (lambda out: _first_shard(out).unlink(),
                       "latents/{shard}: missing"),
    "add a shard": (lambda out: shutil.copy(_first_shard(out),
                                            out / "latents" / "part-00001.parquet"),
                    "latents/part-00001.parquet: not listed in manifest.json"),
    "edit the record": (
        lambda out: (out / "audit" / "record.json").write_text(
            (out / "audit" / "record.json").read_text().replace("world-model-training",
                                                                "advertising")),
        "audit/record.json: sha256 differs"),
    "edit the manifest": (_edit_manifest_rows, "manifest.json: its file list is not the one"),
    "flip a byte in a clip": (lambda out: _flip_byte(_first_clip(out)), "clips/"),
    "drop a file in": (lambda out: (out / "audit" / "notes.txt").write_text("x"),
                       "audit/notes.txt: not listed"),
    "remove _SUCCESS": (lambda out: (out / "_SUCCESS").unlink(), "_SUCCESS: missing"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_verify_names_the_first_broken_entry_or_file(copy, case):
    tamper, expected = TAMPERING[case]
    n = len(_lines(copy))
    shard = _first_shard(copy).name
    tamper(copy)
    result = egoveil("audit", "verify", str(copy))
    assert result.returncode == 1, result.stdout
    first = result.stderr.splitlines()[0]
    assert first.startswith("egoveil: audit verify: FAILED: ")
    assert expected.format(n=n, shard=shard) in first, result.stderr
    assert "Traceback" not in result.stderr


def _write_log_and_manifest(out: Path, entries: list[dict], **manifest_changes) -> None:
    """Write ``entries`` as the log and make manifest.json name it, as a forger would."""
    import hashlib

    data = b"".join(entry_line(e) for e in entries)
    (out / EVENTS_FILE).write_bytes(data)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.update(manifest_changes)
    log_entry = next(f for f in manifest["files"] if f["path"] == EVENTS_FILE)
    log_entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data),
                     rows=len(entries))
    manifest["audit"].update(head=entries[-1]["hash"], entries=len(entries))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _edit_a_shard_and_reseal(out: Path, signer=None) -> None:
    """The probe's forgery: change a shard, put its sha256 in manifest.json and chain a new
    files_sealed entry over the new file list (signed with the forger's own key, if any)."""
    import hashlib

    shard = _first_shard(out)
    _flip_byte(shard)
    data = shard.read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == f"latents/{shard.name}")
    entry.update(sha256=hashlib.sha256(data).hexdigest())
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    entries = _entries(out)
    files = [f for f in manifest["files"] if f["path"] != EVENTS_FILE]
    seal = make_entry(entries[-1]["hash"], len(entries), at=entries[-1]["at"], op="run",
                      op_id=entries[-1]["op_id"], kind="files_sealed",
                      counts={"files": len(files), "files_sha256": files_digest(files)})
    _write_log_and_manifest(out, [*entries, sign_seal(seal, signer) if signer else seal],
                            files=manifest["files"])


@pytest.mark.parametrize("forger", ["unsigned", "own key"])
def test_a_seal_the_owner_did_not_make_fails_verify(copy, public_key, forger):
    head = _entries(copy)[-1]["hash"]
    _edit_a_shard_and_reseal(copy, PseudonymKey.generate().seal_signer()
                             if forger == "own key" else None)
    line = len(_entries(copy))
    own_key = "the seals before it with" if forger == "own key" else "the seal is not signed"
    for extra, expected in (([], own_key), (["--expect-head", head], own_key), (
            ["--key-file", public_key],
            "not with the key given" if forger == "own key" else "the seal is not signed")):
        result = egoveil("audit", "verify", str(copy), *extra)
        assert result.returncode == 1, (extra, result.stdout)
        first = result.stderr.splitlines()[0]
        assert f"FAILED: audit/events.jsonl line {line} (seq {line - 1}): " in first, first
        assert expected in first, (extra, first)


def test_a_rewritten_log_is_caught_by_the_owners_key_and_the_head_kept_outside(
        copy, public_key):
    """A forger who rechains the whole log, re-signs every seal with a key of their own and
    rewrites the record and the manifest passes the folder's own checks; the owner's public
    key and a head an auditor kept from an earlier verify do not."""
    import hashlib

    kept = _entries(copy)[-1]["hash"]
    signer = PseudonymKey.generate().seal_signer()
    record_path = copy / "audit" / "record.json"
    record = json.loads(record_path.read_text())
    record["audit_key"] = signer.public.fingerprint
    record_path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    record_sha = hashlib.sha256(record_path.read_bytes()).hexdigest()
    manifest = json.loads((copy / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == "audit/record.json":
            entry.update(sha256=record_sha, bytes=record_path.stat().st_size)
    files = [f for f in manifest["files"] if f["path"] != EVENTS_FILE]
    prev, forged = GENESIS, []
    for entry in _entries(copy):
        if entry["kind"] == "consent_excluded":
            continue  # what the forger wants gone
        body = {k: v for k, v in entry.items() if k not in ("seq", "prev", "hash")}
        if entry["kind"] == "run_record":
            body["counts"] = dict(body["counts"], record_sha256=record_sha,
                                  audit_key=signer.public.fingerprint)
        if entry["kind"] == "files_sealed":
            body["counts"] = {"files": len(files), "files_sha256": files_digest(files)}
        made = make_entry(prev, len(forged), **body)
        forged.append(sign_seal(made, signer) if entry["kind"] == "files_sealed" else made)
        prev = forged[-1]["hash"]
    _write_log_and_manifest(copy, forged, files=manifest["files"],
                            audit=dict(manifest["audit"], audit_key=signer.public.fingerprint))

    assert egoveil("audit", "verify", str(copy)).returncode == 0
    result = egoveil("audit", "verify", str(copy), "--expect-head", kept)
    assert result.returncode == 1
    assert "the head kept outside the folder is not in the log" in result.stderr
    result = egoveil("audit", "verify", str(copy), "--key-file", public_key)
    assert result.returncode == 1 and "not with the key given" in result.stderr


def test_an_extra_shard_with_a_forged_publishing_note_fails_verify(copy):
    """An extra shard doubles what a reader of the whole latents/ folder gets; a PUBLISHING
    note excuses it only when the folder's audit key signed it for a run not yet sealed."""
    import hashlib

    import pyarrow.parquet as pq

    shard = _first_shard(copy)
    extra = copy / "latents" / "part-00001-0123456789ab.parquet"
    shutil.copy(shard, extra)
    assert pq.read_table(copy / "latents").num_rows == 2 * pq.read_table(shard).num_rows
    staging = copy / ".staging" / "0123456789abcdef"
    staging.mkdir(parents=True)
    sha = hashlib.sha256(extra.read_bytes()).hexdigest()
    notes = {
        "unsigned, as runs wrote it before": {"files": [f"latents/{extra.name}"]},
        "signed with another key": signed_note("0123456789abcdef", GENESIS, [
            {"path": f"latents/{extra.name}", "sha256": sha}],
            PseudonymKey.generate().seal_signer()),
    }
    for case, note in notes.items():
        (staging / "PUBLISHING").write_text(json.dumps(note))
        result = egoveil("audit", "verify", str(copy))
        assert result.returncode == 1, case
        assert f"latents/{extra.name}: not listed in manifest.json" in result.stderr, case
        assert "PUBLISHING: a PUBLISHING note not signed with the folder's audit key" \
            in result.stderr, case


def test_a_genuine_note_of_a_finished_run_excuses_nothing(copy, key):
    """A note replayed from a run the log has sealed (or signed for other bytes) does not
    excuse a file put in its name."""
    import hashlib

    shard = _first_shard(copy)
    extra = copy / "latents" / "part-00001-0123456789ab.parquet"
    shutil.copy(shard, extra)
    sha = hashlib.sha256(extra.read_bytes()).hexdigest()
    entries = _entries(copy)
    signer = key.seal_signer()
    (copy / ".staging" / "r").mkdir(parents=True)
    for run_id, digest in ((entries[-1]["op_id"], sha), ("0123456789abcdef", "0" * 64)):
        note = signed_note(run_id, entries[0]["prev"], [
            {"path": f"latents/{extra.name}", "sha256": digest}], signer)
        (copy / ".staging" / "r" / "PUBLISHING").write_text(json.dumps(note))
        result = egoveil("audit", "verify", str(copy))
        assert result.returncode == 1
        assert f"latents/{extra.name}: not listed in manifest.json" in result.stderr


def _as_published_before_signed_seals(out: Path, key) -> None:
    """Rewrite a folder as egoveil wrote it before it signed its seals: no signature or
    audit key in the log, the manifest or the record, and the key's old plain-hash id."""
    import hashlib

    from privacy.audit_seal import SEAL_KEY_FIELD, SIGNATURE_FIELD

    record_path = out / "audit" / "record.json"
    record = json.loads(record_path.read_text())
    record.pop("audit_key")
    record["key_id"] = key.legacy_key_id
    record_path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    data = record_path.read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == "audit/record.json")
    entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    manifest["audit"].pop("audit_key")
    files = [f for f in manifest["files"] if f["path"] != EVENTS_FILE]
    entries, prev = [], GENESIS
    for old in _entries(out):
        counts = {k: v for k, v in old["counts"].items()
                  if k not in (SIGNATURE_FIELD, SEAL_KEY_FIELD, "audit_key")}
        if old["kind"] == "run_record":
            counts["record_sha256"] = entry["sha256"]
        if old["kind"] == "files_sealed":
            counts["files_sha256"] = files_digest(files)
        new = make_entry(prev, old["seq"], at=old["at"], op=old["op"], op_id=old["op_id"],
                         kind=old["kind"], recording_id=old["recording_id"],
                         segment_index=old["segment_index"], counts=counts)
        entries.append(new)
        prev = new["hash"]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    _write_log_and_manifest(out, entries)


def test_a_folder_published_before_seals_were_signed_stays_usable(copy, public_key, key,
                                                                   key_file):
    """Its unsigned seals are a notice, not a failure; the owner's key still erases in it (the
    record names the key's old id); from then on every seal is signed and checked."""
    _as_published_before_signed_seals(copy, key)
    result = egoveil("audit", "verify", str(copy))
    assert result.returncode == 0, result.stderr
    assert "seals are not signed: the folder was published before" in result.stderr
    refused = egoveil("audit", "verify", str(copy), "--key-file", public_key)
    assert refused.returncode == 1 and "no seal is signed" in refused.stderr

    erased = egoveil("erase", str(copy), "--wearer", "wearer-alice", "--key-file", key_file)
    assert erased.returncode == 0, erased.stderr
    for extra in ([], ["--key-file", public_key]):
        result = egoveil("audit", "verify", str(copy), *extra)
        assert result.returncode == 0, (extra, result.stderr)
        assert "the first 1 seals are not signed" in result.stderr
    # An unsigned seal after a signed one is still a forgery.
    entries = _entries(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    files = [f for f in manifest["files"] if f["path"] != EVENTS_FILE]
    unsigned = make_entry(entries[-1]["hash"], len(entries), at=entries[-1]["at"], op="erase",
                          op_id=entries[-1]["op_id"], kind="files_sealed",
                          counts={"files": len(files), "files_sha256": files_digest(files)})
    _write_log_and_manifest(copy, [*entries, unsigned])
    forged = egoveil("audit", "verify", str(copy))
    assert forged.returncode == 1 and "the seal is not signed" in forged.stderr


def test_validate_runs_the_contract_on_demand(published, copy, tmp_path):
    result = egoveil("validate", str(published.out))
    assert result.returncode == 0, result.stderr
    assert "data contract passed" in result.stdout

    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = _first_shard(copy)
    table = pq.read_table(shard)
    wearers = table.column("wearer_id").to_pylist()
    wearers[0] = "wearer-alice"
    table = table.set_column(table.schema.get_field_index("wearer_id"),
                             table.schema.field("wearer_id"), pa.array(wearers, pa.string()))
    pq.write_table(table, shard)
    page, doc = tmp_path / "v.html", tmp_path / "v.json"
    result = egoveil("validate", str(copy), "--html", str(page), "--json", str(doc))
    assert result.returncode == 1
    assert "expect_column_values_to_match_regex(wearer_id): 1 of" in result.stderr
    assert b"wearer-alice" not in page.read_bytes() + doc.read_bytes()
    assert sorted(os.listdir(copy / "audit")) == sorted(os.listdir(published.out / "audit"))


def test_a_second_run_appends_to_the_same_log(published, copy):
    first = _entries(copy)
    result = egoveil(*published.argv, "--output", str(copy))
    assert result.returncode == 0, result.stderr
    assert "1 recordings excluded" in result.stderr  # counts this run only
    entries = _entries(copy)
    assert entries[:len(first)] == first
    assert len({e["op_id"] for e in entries}) == 2
    assert egoveil("audit", "verify", str(copy)).returncode == 0


def test_erasures_append_through_the_api_and_show_in_the_report(copy, tmp_path, key):
    from privacy.audit_log import load_manifest, record_operation
    from transforms.stores.filesystems import FileSystemsStore

    store = FileSystemsStore(str(copy))
    rec = _entries(copy)[0]["recording_id"]
    record_operation(store, load_manifest(store), op="erase", op_id="00000000000000e1",
                     events=[{"kind": "erasure", "recording_id": rec,
                              "counts": {"rows": 3, "clips": 1}}],
                     signer=key.seal_signer())
    assert egoveil("audit", "verify", str(copy)).returncode == 0
    report = tmp_path / "r.html"
    result = egoveil("audit", "report", str(copy), "--html", str(report), "--thumbnails", "0")
    assert result.returncode == 0 and "erasures: 1" in result.stdout
    html = report.read_text()
    assert "00000000000000e1" in html and "rows: 3" in html


def test_run_refuses_an_output_whose_log_is_broken(published, copy):
    _set_lines(copy, _lines(copy)[1:])
    result = egoveil(*published.argv, "--output", str(copy))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("egoveil: error:")]
    assert len(errors) == 1 and "audit log that does not verify" in errors[0]
    assert "line 1 (seq 0)" in errors[0] and str(copy) not in errors[0]


@pytest.mark.parametrize("args, message", [
    (["audit", "verify", "{tmp}/nope"], "DIR is not a folder"),
    (["audit", "verify", "{out}", "--expect-head", "abc"], "--expect-head takes a log head"),
    (["validate", "{tmp}"], "DIR has no manifest.json"),
    (["audit", "report", "{tmp}"], "DIR has no manifest.json"),
    (["audit", "report", "{out}", "--html", "{tmp}/missing/r.html"], "--html: the folder"),
])
def test_audit_mistakes_get_one_line(published, tmp_path, args, message):
    argv = [a.format(tmp=tmp_path, out=published.out) for a in args]
    result = egoveil(*argv)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("egoveil: error:")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_report_on_a_tampered_folder_says_so(copy, tmp_path):
    shard = _first_shard(copy)
    _flip_byte(shard)
    report = tmp_path / "r.html"
    result = egoveil("audit", "report", str(copy), "--html", str(report))
    assert result.returncode == 1
    assert f"integrity: FAILED: latents/{shard.name}: sha256 differs" in result.stdout
    assert 'data-status="broken"' in report.read_text()


# ---------------------------------------------------------------- the report in a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# What this machine's Chromium needs (Playwright adds --headless and a fresh profile itself).
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it)")
def test_report_in_headless_chromium(published, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    report = tmp_path / "report.html"
    result = egoveil("audit", "report", str(published.out), "--html", str(report))
    assert result.returncode == 0, result.stderr
    assert "integrity: verified" in result.stdout

    requests, errors = [], []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report.as_uri(), wait_until="load")
        state = page.evaluate("""() => ({
            status: document.querySelector('[data-status]').dataset.status,
            contract: document.querySelector('[data-contract]').dataset.contract,
            headings: [...document.querySelectorAll('h2')].map(h => h.textContent.trim()),
            images: [...document.images].map(i => ({ok: i.complete && i.naturalWidth > 0,
                                                    clip: i.dataset.clip, src: i.src,
                                                    w: i.getBoundingClientRect().width})),
            charts: [...document.querySelectorAll('svg.chart')].map(
                s => s.getBoundingClientRect().width * s.getBoundingClientRect().height),
            overflow: document.documentElement.scrollWidth > window.innerWidth,
        })""")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        contract_page = (published.out / "audit" / "validation.html").as_uri()
        page.goto(contract_page, wait_until="load")
        contract_title = page.title()
        browser.close()

    assert requests == [report.as_uri(), contract_page], requests  # no network, no CDN
    assert contract_title == "egoveil data contract: passed"
    assert errors == []
    assert state["status"] == "verified" and state["contract"] == "passed"
    for heading in ("Faces redacted per minute of video", "Verification outcomes",
                    "Dead letters by reason", "Consent coverage", "Erasures",
                    "Models and thresholds", "Redacted thumbnails"):
        assert heading in state["headings"]
    assert len(state["charts"]) >= 3 and all(area > 0 for area in state["charts"])
    assert not state["overflow"]
    clips = {p.stem for p in (published.out / "clips").glob("*.mp4")}
    assert 1 <= len(state["images"]) <= 12
    assert all(i["ok"] and i["w"] > 100 and i["clip"] in clips for i in state["images"])

    from PIL import Image

    picture = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert picture.shape[0] > 2000 and picture.std() > 20  # a long page, not a blank one
    _thumbnails_show_redacted_frames(state["images"], published)


def _thumbnails_show_redacted_frames(images: list[dict], published: Published) -> None:
    """Each thumbnail is its clip's redacted frame: the faces drawn into the input at that
    time are solid grey in the thumbnail."""
    import av
    from PIL import Image

    checked = 0
    for image in images:
        thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(image["src"].split(",")[1])))
                           .convert("RGB"), dtype=int)
        with av.open(str(published.out / "clips" / f"{image['clip']}.mp4")) as container:
            frames = list(container.decode(video=0))
        middle = frames[len(frames) // 2]
        scale = thumb.shape[1] / middle.width
        for x1, y1, x2, y2 in published.boxes[round(middle.time * FPS)]:
            if x2 - x1 < 40:
                continue
            cx, cy = (x1 + x2) / 2 * scale, (y1 + y2) / 2 * scale
            half = (x2 - x1) * scale / 5
            patch = thumb[int(cy - half):int(cy + half), int(cx - half):int(cx + half)]
            assert (np.abs(patch - 128) <= 16).all(axis=-1).mean() > 0.9, image["clip"]
            checked += 1
    assert checked >= 2
