"""Each transform on Beam's TestPipeline, with inputs the tests make."""

from __future__ import annotations

import json
import os
import re

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to, is_not_empty

from pipeline.runner import contract_failure
from pipeline.samples import make_recording
from privacy.config import AnonymizationConfig
from privacy.consent import ConsentRegistry
from schemas.elements import Clip, LatentRow, Recording
from schemas.latents import embedding_array
from schemas.sidecar import RecordingRequest
from schemas.stages import PublishInputs
from tests.faults import BlindFactory, FaultyFactory, HallucinatingFactory
from tests.records import run_record
from transforms.admit import AdmitRecordingFn, AdmitRecordings
from transforms.anonymize import AnonymizeSegmentFn, AnonymizeSegments, ClipPlan
from transforms.discover import DiscoverRecordings, InputPattern
from transforms.embed import EmbedClips
from transforms.media.video import DecodeCaps, probe
from transforms.models.encoders import resolve_encoder
from transforms.publish import Publish
from transforms.segments import PlanSegments, plan_segments
from transforms.write_shards import WriteLatentShards

# These stages' tests are about faces; plates have theirs in tests/test_classes.py.
FACES_ONLY = AnonymizationConfig(other_classes=())


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("recordings")
    (root / "sub").mkdir()
    make_recording(str(root / "a.mp4"), seconds=1.0, fps=10)
    make_recording(str(root / "sub" / "b c é.mov"), seconds=1.0, fps=10, seed=1)
    (root / "sub" / "notes.txt").write_text("not a video")
    (root / ".hidden.mp4").write_bytes(b"")
    (root / "copy.mp4").write_bytes((root / "a.mp4").read_bytes())
    (root / "broken.mp4").write_bytes(os.urandom(4096))
    return root


def _recording(path: str, key, view: str = "rgb") -> Recording:
    import hashlib

    data = open(path, "rb").read()
    sha = hashlib.sha256(data).hexdigest()
    return Recording(uri=path, content_sha256=sha, recording_id=key.pseudonym("recording", sha),
                     wearer_id=key.pseudonym("wearer", "w1"), device_id=None,
                     video=probe(path), view=view, size_bytes=len(data))


def test_discover_folders_globs_and_manifest(folder, key_file):
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join([
        json.dumps({"uri": "a.mp4", "wearer_id": "w1", "extra": "dropped"}),
        "{not json",
        json.dumps({"wearer_id": "no uri"}),
        json.dumps({"uri": "sub/b c é.mov", "stereo": "sideways"}),
    ]) + "\n")
    with TestPipeline() as p:
        found = p | DiscoverRecordings([InputPattern(str(folder / "**"), media_only=True)],
                                       str(manifest), key_file)
        uris = found.requests | beam.Map(lambda r: (os.path.basename(r.uri), r.wearer_id))
        assert_that(uris, equal_to([("a.mp4", "w1"), ("b c é.mov", None), ("copy.mp4", None),
                                    ("broken.mp4", None)]))
        reasons = found.deadletters | beam.Map(lambda d: (d.reason, d.detail))
        assert_that(reasons, equal_to([
            ("bad_manifest", "not valid JSON (column 2)"),
            ("bad_manifest", "field 'uri' is required"),
            ("bad_manifest", "field 'stereo' must be one of none, sbs, tb, streams")]),
            label="deadletters")


def test_admit_dedups_rejects_and_checks_consent(folder, key_file, tmp_path):
    consent = tmp_path / "consent.csv"
    consent.write_text("wearer_id,purpose,granted_at,withdrawn_at\n"
                       "w1,world-model-training,2026-01-01T00:00:00Z,\n"
                       "w2,world-model-training,2026-01-01T00:00:00Z,2026-02-01T00:00:00Z\n")
    requests = [RecordingRequest(str(folder / "a.mp4"), wearer_id="w1"),
                RecordingRequest(str(folder / "copy.mp4"), wearer_id="w1"),
                RecordingRequest(str(folder / "broken.mp4"), wearer_id="w1"),
                RecordingRequest(str(folder / "sub" / "b c é.mov"), wearer_id="w2"),
                RecordingRequest(str(folder / ".hidden.mp4"), wearer_id="w1")]
    fn = AdmitRecordingFn(key_file, str(consent), "world-model-training", DecodeCaps())
    with TestPipeline() as p:
        out = p | beam.Create(requests) | AdmitRecordings(fn)
        assert_that(out.recordings | beam.Map(lambda r: (r.video.width, r.view)),
                    equal_to([(640, "rgb")]))
        assert_that(out.deadletters | beam.Map(lambda d: (d.stage, d.reason)),
                    equal_to([("admit", "unreadable"), ("admit", "unreadable")]),
                    label="deadletters")
        assert_that(out.audit | beam.Map(lambda e: (e.kind, sorted(e.counts))),
                    equal_to([("consent_excluded", ["reason"]), ("duplicate_input", []),
                              ("recording_admitted", ["duration_s", "fps"])]), label="audit")


def test_plan_segments_aligns_to_clips(folder, key):
    rec = _recording(str(folder / "a.mp4"), key)
    segs = plan_segments(rec, clip_span_frames=4, segment_seconds=0.35)
    assert [s.index for s in segs] == [0, 1, 2]
    assert segs[0].end_s == pytest.approx(0.4) and segs[-1].is_last
    with TestPipeline() as p:
        out = p | beam.Create([rec]) | PlanSegments(4, 0.35)
        assert_that(out | beam.Map(lambda s: s.index), equal_to([0, 1, 2]))


def _plan(encoder: str = "random:vjepa2-tiny", write_clips: bool = False) -> ClipPlan:
    spec = resolve_encoder(encoder)
    return ClipPlan(spec.frames_per_clip, 2, spec.geometry, write_clips)


def test_anonymize_emits_encoder_sized_clips(folder, key, key_file, tmp_path):
    rec = _recording(str(folder / "a.mp4"), key)
    plan = _plan(write_clips=True)
    fn = AnonymizeSegmentFn(FACES_ONLY, plan, key_file, str(tmp_path / "clips"), "cfg")
    segments = plan_segments(rec, plan.span, 1.0)
    with TestPipeline() as p:
        out = p | beam.Create(segments) | AnonymizeSegments(fn)
        shapes = out.clips | beam.Map(lambda c: (c.frames.shape, c.frame_count, c.faces_redacted > 0))
        assert_that(shapes, equal_to([((8, 64, 64, 3), 5, True)]))
        assert_that(out.files | beam.Map(lambda f: f.rows), equal_to([10]), label="files")
        assert_that(out.deadletters, equal_to([]), label="no deadletters")
    assert len(list((tmp_path / "clips").glob("*.mp4"))) == 1


@pytest.mark.parametrize("fault", ["raise", "nan", "type", "hang"])
def test_anonymize_fails_closed_when_detection_fails(folder, key, key_file, tmp_path, fault):
    rec = _recording(str(folder / "a.mp4"), key)
    plan = _plan(write_clips=True)
    config = AnonymizationConfig(detect_timeout_s=1.0, other_classes=())
    fn = AnonymizeSegmentFn(config, plan, key_file, str(tmp_path / "clips"),
                            "cfg", detector_factories={
                                "face": FaultyFactory(fault, at=6, hang_s=3.0)})
    with TestPipeline() as p:
        out = p | beam.Create(plan_segments(rec, plan.span, 1.0)) | AnonymizeSegments(fn)
        assert_that(out.clips, equal_to([]))
        assert_that(out.files, equal_to([]), label="no files")
        assert_that(out.deadletters | beam.Map(lambda d: (d.stage, d.reason, d.segment_index)),
                    equal_to([("anonymize", "detector_failed", 0)]), label="deadletter")
    assert not list((tmp_path / "clips").glob("*")) if (tmp_path / "clips").exists() else True


def test_a_silently_blind_detector_is_caught_and_the_segment_redacted_again(
        folder, key, key_file, tmp_path):
    rec = _recording(str(folder / "a.mp4"), key)
    plan = _plan(write_clips=True)
    fn = AnonymizeSegmentFn(FACES_ONLY, plan, key_file, str(tmp_path / "clips"),
                            "cfg", detector_factories={"face": BlindFactory()})
    with TestPipeline() as p:
        out = p | beam.Create(plan_segments(rec, plan.span, 1.0)) | AnonymizeSegments(fn)
        assert_that(out.clips | beam.Map(lambda c: c.qa_status),
                    equal_to(["reredacted_verified"]))
        assert_that(out.audit | beam.Map(lambda e: e.kind),
                    equal_to(["verification_failed", "segment_anonymized"]), label="audit")


def test_unverifiable_segments_are_quarantined(folder, key, key_file, tmp_path):
    rec = _recording(str(folder / "a.mp4"), key)
    plan = _plan(write_clips=True)
    # An independent detector that still sees a face after any redaction.
    fn = AnonymizeSegmentFn(FACES_ONLY, plan, key_file, str(tmp_path / "clips"),
                            "cfg", verifier_factories={"face": HallucinatingFactory()})
    with TestPipeline() as p:
        out = p | beam.Create(plan_segments(rec, plan.span, 1.0)) | AnonymizeSegments(fn)
        assert_that(out.clips, equal_to([]))
        assert_that(out.files, equal_to([]), label="no files")
        assert_that(out.deadletters | beam.Map(lambda d: d.reason),
                    equal_to(["verification_failed"]), label="deadletter")
    assert not list((tmp_path / "clips").glob("*")) if (tmp_path / "clips").exists() else True


def _clip(i: int, frames: np.ndarray) -> Clip:
    return Clip(clip_id=f"{i:032x}", recording_id="r" * 32, wearer_id=None, view="rgb",
                segment_index=0, clip_index=i, start_s=float(i), end_s=float(i + 1),
                frame_count=frames.shape[0], fps=10.0, frames=frames, faces_redacted=1,
                qa_status="redacted_unverified")


def test_embed_clips_with_a_saved_encoder(saved_encoder):
    spec = resolve_encoder(saved_encoder)
    rng = np.random.default_rng(0)
    h, w = spec.geometry.output_hw
    clips = [_clip(i, rng.integers(0, 255, (spec.frames_per_clip, h, w, 3), dtype=np.uint8))
             for i in range(3)]
    with TestPipeline() as p:
        rows = (p | beam.Create(clips) | EmbedClips(spec, max_batch_size=2)).rows
        assert_that(rows | beam.Map(lambda r: (r.clip_index, len(r.embedding),
                                               r.encoder_pretrained)),
                    equal_to([(i, spec.embedding_dim * 2, True) for i in range(3)]))


def test_a_batch_the_encoder_raises_on_becomes_dead_letters_and_the_rest_goes_on(tiny_encoder):
    """A clip the encoder cannot take (four colour channels: normalisation raises) fails its
    batch; that batch's clips become ``embed_failed`` dead letters, the others are embedded."""
    spec = resolve_encoder(tiny_encoder)
    rng = np.random.default_rng(1)
    h, w = spec.geometry.output_hw
    clips = [_clip(i, rng.integers(0, 255, (spec.frames_per_clip, h, w, 3), dtype=np.uint8))
             for i in range(3)]
    clips[1] = _clip(1, rng.integers(0, 255, (spec.frames_per_clip, h, w, 4), dtype=np.uint8))
    clips[1].segment_index = 7
    with TestPipeline() as p:
        out = p | beam.Create(clips) | EmbedClips(spec, max_batch_size=1)
        assert_that(out.rows | beam.Map(lambda r: r.clip_index), equal_to([0, 2]))
        assert_that(out.deadletters | beam.Map(
            lambda d: (d.stage, d.reason, d.recording_id, d.segment_index, d.input_id)),
            equal_to([("embed", "embed_failed", "r" * 32, 7, "r" * 32)]), label="deadletters")


def _row(i: int, dim: int = 4) -> LatentRow:
    emb = np.arange(dim, dtype="<f2") + i
    return LatentRow(clip_id=f"{i:032x}", recording_id="ab" * 16, wearer_id=None, view="rgb",
                     segment_index=i // 10, clip_index=i % 10, start_s=float(i),
                     end_s=float(i) + 1, frame_count=8, fps=10.0, encoder_id="random:test",
                     encoder_pretrained=False, embedding=emb.tobytes(), faces_redacted=0,
                     qa_status="redacted_unverified")


def _publish(rows: list[LatentRow], out: str, staging: str, key_file: str) -> None:
    with TestPipeline() as p:
        shards = (p | beam.Create(rows)
                  | WriteLatentShards(staging, 4, {"run": "test"}, target_shard_bytes=2000))
        empty = p | "NoFiles" >> beam.Create([])
        empty_dl = p | "NoDL" >> beam.Create([])
        empty_ev = p | "NoEvents" >> beam.Create([])
        inputs = p | "Inputs" >> beam.Create([0])
        totals = PublishInputs(shards=shards, clip_files=empty, deadletters=empty_dl,
                               events=empty_ev, inputs=inputs) | Publish(
                                   out, staging, run_record(), key_file=key_file)
        assert_that(totals, is_not_empty())


def test_shards_are_sized_sorted_and_published(tmp_path, key_file):
    out, staging = str(tmp_path / "out"), str(tmp_path / "out" / ".staging" / "run")
    _publish([_row(i) for i in range(50)], out, staging, key_file)
    manifest = json.loads(open(os.path.join(out, "manifest.json")).read())
    shard_files = [f for f in manifest["files"] if f["kind"] == "latents"]
    assert len(shard_files) >= 3
    assert sum(f["rows"] for f in shard_files) == 50
    assert os.path.exists(os.path.join(out, "_SUCCESS"))
    assert not os.path.exists(staging)
    seen = []
    for f in shard_files:
        table = pq.read_table(os.path.join(out, f["path"]))
        keys = list(zip(table.column("segment_index").to_pylist(),
                        table.column("clip_index").to_pylist()))
        assert keys == sorted(keys)
        emb = embedding_array(table.column("embedding"), 4)
        seen += [int(e[0]) for e in emb]
    assert sorted(seen) == list(range(50))


def test_a_shard_that_breaks_the_contract_is_not_published(tmp_path, key_file):
    out, staging = str(tmp_path / "out"), str(tmp_path / "out" / ".staging" / "run")
    rows = [_row(i) for i in range(12)]
    rows[5].embedding = np.array([0, np.nan, 1, 2], dtype="<f2").tobytes()
    _publish(rows, out, staging, key_file)
    for name in ("manifest.json", "_SUCCESS", "latents", "audit"):
        assert not os.path.exists(os.path.join(out, name)), name
    results = json.loads(open(os.path.join(staging, "validation.json")).read())
    assert results["success"] is False
    failed = [(r["suite"], e["column"]) for r in results["results"]
              for e in r["expectations"] if not e["success"]]
    assert failed == [("latents_embeddings", "nonfinite")]
    assert os.path.exists(os.path.join(staging, "validation.html"))
    assert [n for n in os.listdir(staging) if n.endswith(".parquet")]
    message = contract_failure(staging)
    assert "\n" not in message and "the data contract failed (1 of" in message
    assert re.search(r"first: latents/part-0000\d-[0-9a-f]{12}.parquet \(latents_embeddings\): "
                     r"expect_column_values_to_be_in_set\(nonfinite\): 1 of \d+ values "
                     r"unexpected\); nothing", message), message
    assert message.endswith("nothing was published. Results and the staged shards are in "
                            ".staging/run/")
    assert contract_failure(str(tmp_path)) is None


def test_consent_registry_decisions():
    registry = ConsentRegistry.parse(
        "wearer_id,purpose,granted_at,withdrawn_at\n"
        "a,world-model-training,2026-01-01T00:00:00Z,\n"
        "b,world-model-training,2026-01-01T00:00:00Z,2026-02-01T00:00:00Z\n"
        "c,advertising,2026-01-01T00:00:00Z,\n")
    from datetime import datetime, timezone

    now = datetime(2026, 6, 1, tzinfo=timezone.utc)
    assert registry.decide("a", "world-model-training", now=now) is None
    assert registry.decide("b", "world-model-training", now=now) == "withdrawn"
    assert registry.decide("c", "world-model-training", now=now) == "no_grant_for_purpose"
    assert registry.decide(None, "world-model-training", now=now) == "no_wearer_id"
    before = datetime(2025, 12, 1, tzinfo=timezone.utc)
    assert registry.decide("a", "world-model-training", captured_at=before, now=now) \
        == "not_valid_for_capture_time"
