"""Stereo inputs: cross-view face search, packed and paired views, pair ids, joint embedding."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import pytest
from apache_beam.pvalue import TaggedOutput

from pipeline.samples import StereoFace, portrait, stereo_pair
from privacy.config import AnonymizationConfig
from privacy.detectors import build_detector
from privacy.stereo import CrossViewConfig, CrossViewCounts, CrossViewSearch
from schemas.elements import Recording
from schemas.sidecar import RecordingRequest
from transforms.admit import AdmitRecordingFn
from transforms.anonymize import AnonymizeSegmentFn, ClipPlan
from transforms.media.inputs import DecodeCaps
from transforms.media.sources.stereo import split_packed
from transforms.models.encoders import resolve_encoder
from transforms.segments import plan_segments

FPS = 10
FRAMES = 6
WIDTH = 740  # the motorcycle pair is 741 wide; H.264 wants even sizes


def _iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def pair():
    """The astronaut is hard (defocused, hazy, dark) in the right eye; the cameraman is not."""
    faces = [StereoFace(portrait("astronaut"), (250, 200), 90, 40, hard_in="right"),
             StereoFace(portrait("camera"), (560, 260), 70, 55)]
    left, right, lboxes, rboxes = stereo_pair(faces)
    return left[:, :WIDTH], right[:, :WIDTH], lboxes, rboxes


def test_the_other_eye_recovers_a_face_the_detector_missed(pair):
    left, right, lboxes, rboxes = pair
    detector = build_detector("centerface:threshold=0.1")
    dl, dr = detector.detect_batch([left, right])
    assert any(_iou(b, lboxes[0]) > 0.3 for b in dl.boxes)
    assert not any(_iou(b, rboxes[0]) > 0.3 for b in dr.boxes), "the face should be hard"
    assert any(_iou(b, rboxes[1]) > 0.3 for b in dr.boxes)
    counts = CrossViewCounts()
    search = CrossViewSearch(CrossViewConfig(), build_detector(CrossViewConfig().detector))
    recovered = search.recover(left, dl, right, dr, counts)
    assert any(_iou(b, rboxes[0]) > 0.3 for b in recovered.boxes)
    assert counts.recovered >= 1
    # Found in both eyes: nothing to search for the other way round.
    assert not any(_iou(b, lboxes[1]) > 0.3 for b in search.recover(right, dr, left, dl).boxes)
    # Disabled, the search adds nothing.
    off = CrossViewSearch(CrossViewConfig(enabled=False), None)
    assert len(off.recover(left, dl, right, dr)) == 0


@pytest.mark.parametrize("kwargs", [{"max_disparity": 0}, {"row_slack": 9},
                                    {"min_search_px": 4}, {"max_size_ratio": 1}])
def test_cross_view_config_names_the_bad_value(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        CrossViewConfig(**kwargs)


def test_packed_frames_split_into_equal_views():
    frame = np.arange(5 * 9 * 3, dtype=np.uint8).reshape(5, 9, 3)
    sbs, tb = split_packed(frame, "sbs"), split_packed(frame, "tb")
    assert sbs["left"].shape == sbs["right"].shape == (5, 4, 3)
    assert (sbs["right"] == frame[:, 4:8]).all()
    assert tb["left"].shape == tb["right"].shape == (2, 9, 3)
    assert (tb["right"] == frame[2:4]).all()


def _write(path: str, *views: list[np.ndarray]) -> None:
    """One video stream per list of frames (two lists: a stereo 'streams' container)."""
    with av.open(path, "w") as container:
        streams = []
        for frames in views:
            stream = container.add_stream("libx264", rate=FPS)
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.options = {"crf": "12", "preset": "veryfast"}
            streams.append(stream)
        for i in range(len(views[0])):
            for stream, frames in zip(streams, views):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
                vf.pts, vf.time_base = i, Fraction(1, FPS)
                container.mux(stream.encode(vf))
        for stream in streams:
            container.mux(stream.encode())


@pytest.fixture(scope="module")
def stereo_inputs(pair, tmp_path_factory):
    left, right, _, _ = pair
    root = tmp_path_factory.mktemp("stereo")
    _write(str(root / "sbs.mp4"), [np.concatenate([left, right], axis=1)] * FRAMES)
    _write(str(root / "left.mp4"), [left] * FRAMES)
    _write(str(root / "right.mp4"), [right] * FRAMES)
    _write(str(root / "streams.mkv"), [left] * FRAMES, [right] * FRAMES)
    return root


def _run(requests, key_file, clips_dir, joint=False):
    """Admission, segments and the fused anonymize step, called as Beam calls them."""
    spec = resolve_encoder("random:vjepa2-tiny")
    plan = ClipPlan(spec.frames_per_clip, 1, spec.geometry, write_clips=clips_dir is not None,
                    joint_pairs=joint)
    admit = AdmitRecordingFn(key_file, None, "world-model-training", DecodeCaps())
    # Faces only: the plate search is tested in tests/test_classes.py.
    anonymize = AnonymizeSegmentFn(AnonymizationConfig(other_classes=()), plan, key_file,
                                   clips_dir, "cfg")
    admit.setup()
    anonymize.setup()
    clips, events = [], []
    try:
        for request in requests:
            outputs = list(admit.process(request))
            assert not [o for o in outputs if isinstance(o, TaggedOutput)
                        and o.tag == "deadletter"]
            for rec in (o for o in outputs if isinstance(o, Recording)):
                for segment in plan_segments(rec, plan.span, 10.0):
                    for out in anonymize.process(segment):
                        if isinstance(out, TaggedOutput):
                            assert out.tag != "deadletter", out.value
                            if out.tag == "audit" and out.value.kind == "segment_anonymized":
                                events.append(out.value)
                        else:
                            clips.append(out)
    finally:
        anonymize.teardown()
    return clips, events


def test_sbs_streams_and_file_pairs_redact_both_eyes_with_shared_pair_ids(stereo_inputs, pair, key_file,
                                                                   tmp_path):
    root = stereo_inputs
    _, _, _, rboxes = pair
    clips_dir = str(tmp_path / "clips")
    os.makedirs(clips_dir)
    clips, events = _run([
        RecordingRequest(str(root / "sbs.mp4"), wearer_id="w", stereo="sbs"),
        RecordingRequest(str(root / "left.mp4"), wearer_id="w", pair_uri=str(root / "right.mp4")),
        RecordingRequest(str(root / "streams.mkv"), wearer_id="w", stereo="streams"),
    ], key_file, clips_dir)
    by_recording: dict = {}
    for clip in clips:
        by_recording.setdefault(clip.recording_id, []).append(clip)
    assert len(by_recording) == 3
    for group in by_recording.values():
        assert sorted(c.view for c in group) == ["left", "right"] * (len(group) // 2)
        for index in {c.clip_index for c in group}:
            same = [c for c in group if c.clip_index == index]
            assert len({c.pair_id for c in same}) == 1 and same[0].pair_id
    # Every instant's hard face was found through the left eye (no temporal help needed).
    assert all(e.counts["views"] == 2 and e.counts["cross_view_recovered"] >= FRAMES
               for e in events)
    # ...and is painted over in the right eye's clip video.
    right_clips = [c for c in clips if c.view == "right"]
    x1, y1, x2, y2 = rboxes[0]
    for clip in right_clips:
        with av.open(os.path.join(clips_dir, f"{clip.clip_id}.mp4")) as container:
            for frame in container.decode(video=0):
                face = frame.to_ndarray(format="rgb24")[y1 + 10:y2 - 10, x1 + 10:x2 - 10]
                assert (np.abs(face.astype(int) - 128) <= 12).all(axis=-1).mean() > 0.9


def test_joint_embedding_puts_both_eyes_in_one_stereo_clip(stereo_inputs, key_file):
    clips, _ = _run([RecordingRequest(str(stereo_inputs / "sbs.mp4"), wearer_id="w",
                                      stereo="sbs")], key_file, None, joint=True)
    spec = resolve_encoder("random:vjepa2-tiny")
    assert clips and {c.view for c in clips} == {"stereo"}
    assert all(c.pair_id and c.frames.shape[1:3] == spec.geometry.output_hw for c in clips)


def test_two_sources_pair_by_timestamp_and_count_frames_without_a_partner():
    from types import SimpleNamespace

    from transforms.media.inputs import DecodeStats, MediaError
    from transforms.media.sources.stereo import zip_views

    def frames(times):
        return iter([(SimpleNamespace(time_s=t, to_rgb=lambda t=t: np.full((2, 2, 3), int(t * 10),
                                                                        np.uint8)), True)
                     for t in times])

    stats = DecodeStats()
    # The right eye lost its second frame: the rest still pair with their own instants.
    out = list(zip_views(frames([0.0, 0.1, 0.2, 0.3]), frames([0.0, 0.2, 0.3]), 10.0, stats))
    assert [round(i.time_s, 1) for i, _ in out] == [0.0, 0.2, 0.3] and stats.corrupt == 1
    assert out[1][0].views()["right"][0, 0, 0] == 2
    with pytest.raises(MediaError, match="not synchronised"):
        list(zip_views(frames([0.0, 0.1]), frames([5.0, 5.1]), 10.0, DecodeStats()))
