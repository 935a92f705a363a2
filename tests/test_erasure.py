"""Erasure, tombstones and location coarsening, on outputs published by the real writers.

The end-to-end cycle (run, erase, run again) is in ``test_identifiers_end_to_end``;
these tests cover every branch of ``egoveil erase`` on a small output that the
shard writer and the publish step produce in a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from pipeline.erase import erase
from pipeline.errors import UserError
from pipeline.output_files import UnsafePath, confined
from privacy.audit_verify import verify_output
from privacy.erasure import ErasureError, ErasureRequest, erase_rows
from privacy.metadata_policy import LocationPolicy, geohash
from privacy.pseudonyms import PseudonymKey
from privacy.tombstones import Tombstone, TombstoneError, Tombstones
from schemas.elements import LatentRow
from schemas.latents import latent_schema, shard_metadata
from schemas.records import DeadLetter
from schemas.stages import PublishedFile, PublishInputs
from tests.records import run_record
from transforms.publish import Publish
from transforms.stores.filesystems import FileSystemsStore
from transforms.write_shards import WriteLatentShards

WEARERS = ("alice", "bob", "carol")


def test_geohash_cells_and_the_coarsening_policy():
    assert geohash(57.64911, 10.40744, 11) == "u4pruydqqvj"  # the reference example
    assert geohash(48.8584, 2.2945, 5) == "u09tu"           # the Eiffel tower
    assert LocationPolicy().coarsen((48.8584, 2.2945)) is None
    assert LocationPolicy(4).coarsen((48.8584, 2.2945)) == "u09t"
    assert LocationPolicy(4).coarsen(None) is None
    for bad in (0, 6, 12):
        with pytest.raises(ValueError, match="between 1 and 5"):
            LocationPolicy(bad)


def test_tombstones_of_the_keys_old_id_are_the_same_keys():
    """Tombstone files written before key ids were derived name the key by its old plain-hash
    id: the same key still matches them, and adding to them writes its current id."""
    key, other = PseudonymKey(b"k" * 32), PseudonymKey(b"x" * 32)
    wearer = key.pseudonym("wearer", "alice")
    old = Tombstones(key_id=key.legacy_key_id, entries=(Tombstone("wearer", wearer, "e", "t"),))
    old.check_key(key.key_id, key.legacy_key_id)
    with pytest.raises(TombstoneError, match="key id"):
        old.check_key(other.key_id, other.legacy_key_id)
    assert old.adding(key.key_id, [], legacy_key_id=key.legacy_key_id).key_id == key.key_id
    assert key.names(key.legacy_key_id) and key.names(key.key_id)
    assert not key.names(other.key_id) and not key.names(None)


def test_tombstones_hold_pseudonyms_only_and_name_their_key():
    key = PseudonymKey(b"k" * 32)
    wearer = key.pseudonym("wearer", "alice")
    stones = Tombstones().adding(key.key_id, [Tombstone("wearer", wearer, "e1", "t")])
    again = Tombstones.parse(stones.dumps())
    assert again == stones and again.match(wearer_id=wearer) == "wearer"
    assert again.match(wearer_id=key.pseudonym("wearer", "bob")) is None
    assert b"alice" not in stones.dumps()
    assert len(again.adding(key.key_id, [Tombstone("wearer", wearer, "e2", "t2")])) == 1
    with pytest.raises(TombstoneError, match="key id"):
        again.check_key(PseudonymKey(b"x" * 32).key_id)
    with pytest.raises(TombstoneError, match="pseudonym"):
        Tombstone("wearer", "alice", "e", "t")
    with pytest.raises(TombstoneError):
        Tombstones.parse(b'{"format": "something else"}')
    with pytest.raises(TombstoneError, match="key id"):
        Tombstones(key_id=None, entries=(Tombstone("wearer", wearer, "e", "t"),))
    assert Tombstones().fingerprint() != stones.fingerprint()


def test_paths_from_a_manifest_stay_inside_the_output(tmp_path):
    assert confined(str(tmp_path), "latents/part-00000.parquet").startswith(str(tmp_path))
    for bad in ("../x", "/etc/passwd", "latents/../../x", "", "clips/.hidden", "a//b"):
        with pytest.raises(UnsafePath):
            confined(str(tmp_path), bad)


def _row(key: PseudonymKey, i: int, wearer: str | None) -> LatentRow:
    recording = key.pseudonym("recording", f"content-{wearer}")
    return LatentRow(
        clip_id=hashlib.sha256(f"clip{i}".encode()).hexdigest()[:32], recording_id=recording,
        wearer_id=key.pseudonym("wearer", wearer) if wearer else None, view="rgb",
        segment_index=i // 4, clip_index=i % 4, start_s=float(i), end_s=float(i + 1),
        frame_count=8, fps=10.0, encoder_id="random:test", encoder_pretrained=False,
        embedding=(np.arange(4, dtype="<f2") + i).tobytes(), faces_redacted=1,
        qa_status="redacted_unverified", device_id=key.pseudonym("device", "SN1"))


def test_erase_rows_keeps_unknown_wearers_and_names_what_it_removed():
    key = PseudonymKey(b"k" * 32)
    rows = [_row(key, i, w) for i, w in enumerate(["alice", "bob", None, "alice"])]
    table = pa.Table.from_pylist([{f: getattr(r, f) for f in r.__slots__} for r in rows],
                                 schema=latent_schema(4))
    request = ErasureRequest(wearers=frozenset({key.pseudonym("wearer", "alice")}))
    result = erase_rows(table, request)
    assert result.removed_rows == 2 and result.kept.num_rows == 2
    assert result.recordings == {key.pseudonym("recording", "content-alice")}
    assert result.kept.schema.equals(table.schema, check_metadata=True)
    with pytest.raises(ErasureError, match="wearer_id"):
        erase_rows(table.drop_columns(["wearer_id"]), request)
    with pytest.raises(ErasureError):
        ErasureRequest()


@pytest.fixture(scope="module")
def published_once(tmp_path_factory, key_file, key):
    """An output with 30 rows of three wearers over several shards, clips and dead letters,
    published once for the module (the publish step's data contract takes seconds)."""
    out = tmp_path_factory.mktemp("published") / "out"
    staging = str(out / ".staging" / "run")
    rows = [_row(key, i, WEARERS[i % 3]) for i in range(30)]
    clips = []
    for row in rows:
        path = out / "clips" / f"{row.clip_id}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"clip of " + row.clip_id.encode())
        clips.append(PublishedFile(path=f"clips/{row.clip_id}.mp4", kind="clip", rows=8,
                                   sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                                   bytes=path.stat().st_size))
    alice_rec = key.pseudonym("recording", "content-alice")
    deadletters = [DeadLetter(input_id="a" * 32, stage="anonymize", reason="detector_failed",
                              recording_id=alice_rec, segment_index=9),
                   DeadLetter(input_id="b" * 32, stage="admit", reason="unreadable")]
    with TestPipeline() as p:
        shards = (p | "Rows" >> beam.Create(rows)
                  | WriteLatentShards(staging, 4, {"run": "test"}, target_shard_bytes=1500))
        PublishInputs(shards=shards, clip_files=p | "Clips" >> beam.Create(clips),
                      deadletters=p | "DL" >> beam.Create(deadletters),
                      events=p | "Events" >> beam.Create([]),
                      inputs=p | "Inputs" >> beam.Create([0])) | Publish(
                          str(out), staging, run_record(key.key_id), key_file=key_file)
    os.makedirs(out / ".staging", exist_ok=True)
    return out


@pytest.fixture()
def published(published_once, tmp_path):
    """This test's own copy of the published output, to erase from and tamper with."""
    out = tmp_path / "out"
    shutil.copytree(published_once, out, symlinks=True)
    return out


def _dead_run_named(out, key, paths) -> None:
    """A run that held the output's lock and died while publishing ``paths``: its staging
    folder, with its marker and its signed note."""
    from pipeline.output_lock import staging_marker
    from privacy.audit_log import AuditLog
    from privacy.audit_seal import signed_note

    folder = out / ".staging" / "deadrun00000000"
    folder.mkdir(parents=True)
    (folder / "RUNNING").write_bytes(staging_marker("run", "deadrun00000000"))
    head = AuditLog.load(FileSystemsStore(str(out))).head
    files = [{"path": str(p.relative_to(out)), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
             for p in paths]
    note = signed_note("deadrun00000000", head, files, key.seal_signer())
    (folder / "PUBLISHING").write_text(json.dumps(note))


def _snapshot(out) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


def _manifest_is_consistent(out) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["files"]:
        data = (out / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {str(p.relative_to(out)) for p in (out / "latents").glob("*")} | \
        {str(p.relative_to(out)) for p in (out / "clips").glob("*")}
    assert on_disk <= listed, on_disk - listed
    return manifest


def _rows(out) -> pa.Table:
    manifest = json.loads((out / "manifest.json").read_text())
    return pa.concat_tables(pq.read_table(out / f["path"]) for f in manifest["files"]
                            if f["kind"] == "latents")


def test_erase_a_wearer_rewrites_shards_deletes_clips_and_leaves_a_tombstone(
        published, key_file, key):
    out = published
    before = _rows(out)
    old_shards = {f.name for f in (out / "latents").glob("*")}
    # A clip of an earlier run that died while publishing: not listed, but named in that
    # run's signed PUBLISHING note (egoveil deletes only what a manifest or note named).
    stray = out / "clips" / ("f" * 32 + ".mp4")
    stray.write_bytes(b"debris")
    _dead_run_named(out, key, [stray])
    alice = key.pseudonym("wearer", "alice")
    alice_clips = [c for c, w in zip(before.column("clip_id").to_pylist(),
                                     before.column("wearer_id").to_pylist()) if w == alice]

    summary = erase(str(out), ["alice"], [], key_file)

    after = _rows(out)
    assert summary.rows_removed == 10 == before.num_rows - after.num_rows
    assert alice not in after.column("wearer_id").to_pylist()
    others = before.filter(pa.compute.not_equal(before.column("wearer_id"), alice))
    assert sorted(after.column("clip_id").to_pylist()) == \
        sorted(others.column("clip_id").to_pylist())
    assert sorted(after.column("embedding").to_pylist()) == \
        sorted(others.column("embedding").to_pylist())
    manifest = _manifest_is_consistent(out)
    assert manifest["totals"]["latent_rows"] == 20 and manifest["totals"]["clips"] == 20
    new_shards = {f.name for f in (out / "latents").glob("*")}
    assert len(old_shards - new_shards) == summary.shards_rewritten + summary.shards_removed
    assert all(re.fullmatch(r"part-\d{5}-[0-9a-f]{12}\.parquet", n)
               for n in new_shards - old_shards)
    for shard in (out / "latents").glob("*"):
        meta = pq.ParquetFile(shard).metadata
        assert shard_metadata(pq.read_schema(shard)) == shard_metadata(
            latent_schema(4, {"run": "test"}))
        assert meta.row_group(0).column(0).compression == "ZSTD"
    assert not any((out / "clips" / f"{c}.mp4").exists() for c in alice_clips)
    assert not stray.exists() and summary.unlisted_files_deleted == 1
    assert summary.deadletters_removed == 1
    deadletters = (out / "deadletter" / "deadletters.jsonl").read_text().splitlines()
    assert [json.loads(d)["reason"] for d in deadletters] == ["unreadable"]

    stones = Tombstones.parse((out / "erasure" / "tombstones.json").read_bytes())
    assert stones.key_id == key.key_id and stones.match(wearer_id=alice) == "wearer"
    assert stones.match(recording_id=key.pseudonym("recording", "content-alice"))
    events = [json.loads(line) for line in
              (out / "audit" / "events.jsonl").read_text().splitlines()]
    erasures = [e for e in events if e["kind"] == "erasure"]
    assert len(erasures) == 1 and erasures[0]["counts"]["rows_removed"] == 10
    assert [e["kind"] for e in events][-2:] == ["erasure", "files_sealed"]
    assert erasures[0]["op"] == "erase" and erasures[0]["op_id"] == summary.erasure_id
    verified = verify_output(FileSystemsStore(str(out)))
    # The fixture's clips are stand-in bytes, not videos: their frames cannot be counted.
    assert [f for f in verified.findings if "cannot be read as clip" not in f.problem] == []
    for data in _snapshot(out).values():
        assert b"alice" not in data

    again = erase(str(out), ["alice"], [], key_file)
    assert again.rows_removed == 0 and again.tombstones_added == 0
    _manifest_is_consistent(out)


def test_erase_a_recording_by_file_or_by_pseudonym(published, key_file, key, tmp_path):
    raw = tmp_path / "bob.mp4"
    raw.write_bytes(b"content-bob")
    bob_recording = key.pseudonym("recording", hashlib.sha256(b"content-bob").hexdigest())
    carol_recording = key.pseudonym("recording", "content-carol")
    summary = erase(str(published), [], [carol_recording], key_file)
    assert summary.rows_removed == 10
    assert carol_recording not in _rows(published).column("recording_id").to_pylist()
    # A file is hashed to find its pseudonym; with no rows yet it still gets a tombstone.
    summary = erase(str(published), [], [str(raw)], key_file)
    assert summary.rows_removed == 0 and summary.tombstones_added == 1
    stones = Tombstones.parse((published / "erasure" / "tombstones.json").read_bytes())
    assert stones.recordings == {carol_recording, bob_recording}
    _manifest_is_consistent(published)


def test_an_interrupted_erasure_is_finished_by_running_it_again(published, key_file, key):
    """Killed after the manifest swap, before deleting: the old shards still hold the rows."""
    out = published
    old = {p.name: p.read_bytes() for p in (out / "latents").glob("*.parquet")}
    erase(str(out), ["alice"], [], key_file)
    for name, data in old.items():  # put the old shards back, as a kill would have left them
        (out / "latents" / name).write_bytes(data)
    again = erase(str(out), ["alice"], [], key_file)
    assert again.unlisted_files_deleted == len(old) and again.rows_removed == 0
    assert not any((out / "latents" / name).exists() for name in old)
    _manifest_is_consistent(out)
    (out / "erasure" / ".lock").write_bytes(b"")
    with pytest.raises(UserError, match="another erasure"):
        erase(str(out), ["bob"], [], key_file)


@pytest.mark.parametrize("mistake, message", [
    ("wrong_key", "is not the key DIR was written with"),
    ("weak_key", "patterned, not random"),
    ("key_open_to_others", "chmod 600"),
    ("tampered_shard", "does not match manifest.json"),
    ("run_in_progress", "a run into DIR is in progress"),
    ("escaping_manifest", "leaves the output folder"),
    ("not_published", "not a published egoveil output"),
    ("neither_file_nor_pseudonym", "neither a readable file nor a recording pseudonym"),
])
def test_erase_refuses_and_changes_nothing(published, key_file, tmp_path, mistake, message):
    out = published
    key_arg, recordings = key_file, []
    if mistake == "wrong_key":
        other = tmp_path / "other.key"
        PseudonymKey.create_file(str(other))
        key_arg = str(other)
    elif mistake == "weak_key":
        weak = tmp_path / "weak.key"
        weak.write_bytes(b"0123456789abcdef" * 4 + b"\n")
        weak.chmod(0o600)
        key_arg = str(weak)
    elif mistake == "key_open_to_others":
        (tmp_path / "open.key").write_bytes(open(key_file, "rb").read())
        (tmp_path / "open.key").chmod(0o644)
        key_arg = str(tmp_path / "open.key")
    elif mistake == "tampered_shard":
        shard = next((out / "latents").glob("*.parquet"))
        shard.write_bytes(shard.read_bytes() + b"x")
    elif mistake == "run_in_progress":
        (out / ".staging" / "run2").mkdir()
        (out / ".staging" / "run2" / "RUNNING").write_bytes(b"")
    elif mistake == "escaping_manifest":
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["files"][0]["path"] = "../../etc/passwd"
        (out / "manifest.json").write_text(json.dumps(manifest))
    elif mistake == "not_published":
        (out / "_SUCCESS").unlink()
    elif mistake == "neither_file_nor_pseudonym":
        recordings = ["/nonexistent/walk.mp4"]
    before = _snapshot(out)
    with pytest.raises(UserError, match=message) as exc:
        erase(str(out), ["alice"] if not recordings else [], recordings, key_arg)
    assert _snapshot(out) == before
    assert str(tmp_path) not in str(exc.value) and "walk.mp4" not in str(exc.value)


def test_admission_honours_tombstones_before_decoding(tmp_path, key_file, key):
    """An erased wearer is never opened; an erased recording is hashed, never probed."""
    from apache_beam.testing.util import assert_that, equal_to

    from pipeline.samples import make_recording
    from schemas.sidecar import RecordingRequest
    from transforms.admit import AdmitRecordingFn, AdmitRecordings
    from transforms.media.inputs import DecodeCaps

    video = tmp_path / "kept.mp4"
    make_recording(str(video), seconds=0.5, fps=10)
    erased = tmp_path / "erased.mp4"
    erased.write_bytes(os.urandom(4096))  # probing it would make an 'unreadable' dead letter
    content = hashlib.sha256(erased.read_bytes()).hexdigest()
    stones = Tombstones().adding(key.key_id, [
        Tombstone("wearer", key.pseudonym("wearer", "alice"), "e", "t"),
        Tombstone("recording", key.pseudonym("recording", content), "e", "t")])
    requests = [RecordingRequest(str(tmp_path / "missing.mp4"), wearer_id="alice"),
                RecordingRequest(str(erased), wearer_id="bob"),
                RecordingRequest(str(video), wearer_id="bob")]
    fn = AdmitRecordingFn(key_file, None, "world-model-training", DecodeCaps(),
                          tombstones=stones)
    with TestPipeline() as p:
        out = p | beam.Create(requests) | AdmitRecordings(fn)
        assert_that(out.recordings | beam.Map(lambda r: os.path.basename(r.uri)),
                    equal_to(["kept.mp4"]))
        assert_that(out.deadletters, equal_to([]), label="no dead letters")
        assert_that(out.audit | beam.Map(lambda e: (e.kind, e.counts.get("match"))),
                    equal_to([("erasure_excluded", "wearer"), ("erasure_excluded", "recording"),
                              ("recording_admitted", None)]),
                    label="audit")
    with pytest.raises(TombstoneError, match="key id"):
        AdmitRecordingFn(key_file, None, "p", DecodeCaps(), tombstones=Tombstones().adding(
            PseudonymKey(b"z" * 32).key_id, [Tombstone("wearer", "0" * 32, "e", "t")])).setup()


def test_publish_refuses_when_tombstones_changed_during_the_run(tmp_path, key, key_file):
    """An erasure made while a run was going must not be undone by that run's publish."""
    out = tmp_path / "out"
    staging = str(out / ".staging" / "run")
    started_with = Tombstones().fingerprint()
    (out / "erasure").mkdir(parents=True)
    (out / "erasure" / "tombstones.json").write_bytes(Tombstones().adding(key.key_id, [
        Tombstone("wearer", key.pseudonym("wearer", "alice"), "e", "t")]).dumps())
    with pytest.raises(Exception, match="erasure was made in this output while the run"):
        with TestPipeline() as p:
            shards = (p | "Rows" >> beam.Create([_row(key, 0, "alice")])
                      | WriteLatentShards(staging, 4, {}))
            empty = [p | f"Empty{i}" >> beam.Create([]) for i in range(3)]
            PublishInputs(shards, *empty, p | "Inputs" >> beam.Create([0])) | Publish(
                str(out), staging, run_record(key.key_id,
                                              erasure={"tombstones_sha256": started_with}),
                key_file=key_file)
    assert not (out / "manifest.json").exists() and not (out / "_SUCCESS").exists()
    assert not list((out / "latents").glob("*")) if (out / "latents").exists() else True


def test_erasing_a_wearer_reaches_dead_letters_of_inputs_that_made_no_row(tmp_path, key,
                                                                          key_file):
    """A wearer's recording that failed at admission or in every segment has no row to be
    found by; its dead letters name the wearer's pseudonym, and the recording is tombstoned
    so that a later run skips it."""
    out = tmp_path / "out"
    staging = str(out / ".staging" / "run")
    alice, bob = key.pseudonym("wearer", "alice"), key.pseudonym("wearer", "bob")
    unreadable = key.pseudonym("recording", "content-unreadable")
    failed = key.pseudonym("recording", "content-failed")
    deadletters = [
        DeadLetter(input_id="a" * 32, stage="admit", reason="unreadable",
                   recording_id=unreadable, wearer_id=alice),
        DeadLetter(input_id="b" * 32, stage="admit", reason="unsupported", wearer_id=alice),
        DeadLetter(input_id="c" * 32, stage="anonymize", reason="detector_failed",
                   recording_id=failed, segment_index=0, wearer_id=alice),
        DeadLetter(input_id="d" * 32, stage="anonymize", reason="detector_failed",
                   recording_id=key.pseudonym("recording", "content-bob"), segment_index=3,
                   wearer_id=bob)]
    with TestPipeline() as p:
        shards = (p | "Rows" >> beam.Create([_row(key, i, "bob") for i in range(4)])
                  | WriteLatentShards(staging, 4, {"run": "test"}))
        PublishInputs(shards=shards, clip_files=p | "Clips" >> beam.Create([]),
                      deadletters=p | "DL" >> beam.Create(deadletters),
                      events=p | "Events" >> beam.Create([]),
                      inputs=p | "Inputs" >> beam.Create([5])) | Publish(
                          str(out), staging, run_record(key.key_id), key_file=key_file)

    summary = erase(str(out), ["alice"], [], key_file)
    assert summary.rows_removed == 0 and summary.deadletters_removed == 3
    kept = [json.loads(line) for line in
            (out / "deadletter" / "deadletters.jsonl").read_text().splitlines()]
    assert [(d["input_id"], d["wearer_id"]) for d in kept] == [("d" * 32, bob)]
    stones = Tombstones.parse((out / "erasure" / "tombstones.json").read_bytes())
    assert stones.match(recording_id=unreadable) == "recording"
    assert stones.match(recording_id=failed) == "recording"
    assert summary.tombstones_added == 3  # the wearer and both recordings
    assert verify_output(FileSystemsStore(str(out))).findings == []


def test_admission_dead_letters_name_the_wearer_and_the_recording(tmp_path, key, key_file):
    from apache_beam.testing.util import assert_that, equal_to

    from schemas.sidecar import RecordingRequest
    from transforms.admit import AdmitRecordingFn, AdmitRecordings
    from transforms.media.inputs import DecodeCaps

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(4096))
    recording = key.pseudonym("recording", hashlib.sha256(broken.read_bytes()).hexdigest())
    fn = AdmitRecordingFn(key_file, None, "world-model-training", DecodeCaps())
    with TestPipeline() as p:
        out = p | beam.Create([RecordingRequest(str(broken), wearer_id="alice"),
                               RecordingRequest(str(tmp_path / "missing.mp4"))]) \
            | AdmitRecordings(fn)
        assert_that(out.deadletters | beam.Map(
            lambda d: (d.reason, d.recording_id, d.wearer_id)),
            equal_to([("unreadable", recording, key.pseudonym("wearer", "alice")),
                      ("unreadable", None, None)]))


def test_an_erasure_clears_what_dead_and_refused_runs_staged(published, key_file):
    """Staging folders of locked runs that died or that a gate refused may hold the erased
    wearer's rows: the erasure (which holds the lock, so none of them is going) removes
    them. A killed erasure's own marker is taken over."""
    from pipeline.output_lock import holder_here, staging_marker

    out = published
    for run_id, gated in (("dead000000000000", False), ("gated00000000000", True)):
        folder = out / ".staging" / run_id
        folder.mkdir(parents=True)
        (folder / "RUNNING").write_bytes(staging_marker("run", run_id, failed_gate=gated))
        (folder / "part-00000.parquet").write_bytes(b"staged rows")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    killed = dict(json.loads(holder_here("erase").to_bytes()), pid=int(dead))
    (out / "erasure").mkdir(exist_ok=True)
    (out / "erasure" / ".lock").write_text(json.dumps(killed))
    summary = erase(str(out), ["alice"], [], key_file)
    assert summary.rows_removed == 10
    assert not list((out / ".staging").iterdir()) and not (out / "erasure" / ".lock").exists()
