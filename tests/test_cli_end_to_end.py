"""End to end through the ``egoveil`` command: a generated video with faces at known places."""

from __future__ import annotations

import json
import os

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.samples import SIDE_TRACK_STRINGS
from schemas.latents import embedding_array, latent_schema, shard_metadata
from tests.cli import egoveil, egoveil_process
from transforms.models.encoders import RANDOM_PRESETS

TINY_DIM = RANDOM_PRESETS["vjepa2-tiny"]["hidden_size"]


def _redacted_share(frame: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Share of the pixels in the middle of ``box`` painted with the solid redaction value."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) // 10, (y2 - y1) // 10
    region = frame[y1 + dy:y2 - dy, x1 + dx:x2 - dx].astype(int)
    return float((np.abs(region - 128) <= 12).all(axis=-1).mean())


@pytest.fixture(scope="module")
def run_output(tmp_path_factory, sample_video, key_file, saved_encoder):
    video, boxes = sample_video
    out = tmp_path_factory.mktemp("run") / "out"
    # Faces only: the default classes' run is tests/test_audit_end_to_end.py's.
    result = egoveil("run", "--input", video, "--output", str(out), "--key-file", key_file,
                     "--encoder", saved_encoder, "--clips", "--no-progress", "--redact", "faces")
    assert result.returncode == 0, result.stderr
    return out, boxes, result


def test_run_writes_shards_with_the_schema(run_output):
    out, _, result = run_output
    assert "Traceback" not in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert (out / "_SUCCESS").exists()
    shards = [f for f in manifest["files"] if f["kind"] == "latents"]
    assert shards and all(f["path"].startswith("latents/part-") for f in shards)
    table = pq.read_table(out / shards[0]["path"])
    expected = latent_schema(TINY_DIM)
    assert table.schema.remove_metadata().equals(expected.remove_metadata())
    meta = shard_metadata(table.schema)
    assert meta["embedding_dim"] == TINY_DIM and meta["encoder"]["pretrained"] is True
    assert table.num_rows == manifest["totals"]["latent_rows"] >= 1
    emb = embedding_array(table.column("embedding"), TINY_DIM)
    assert emb.shape == (table.num_rows, TINY_DIM) and np.isfinite(emb).all()
    assert set(table.column("qa_status").to_pylist()) <= {"redacted_unverified", "verified"}
    assert min(table.column("faces_redacted").to_pylist()) > 0


def test_faces_are_redacted_where_they_were_drawn(run_output):
    out, boxes, _ = run_output
    clips = sorted((out / "clips").glob("*.mp4"))
    assert clips
    checked = 0
    for clip in clips:
        with av.open(str(clip)) as container:
            assert [s.type for s in container.streams] == ["video"]
            for frame in container.decode(video=0):
                index = round(frame.time * 15)
                image = frame.to_ndarray(format="rgb24")
                for box in boxes[index]:
                    x1, y1, x2, y2 = box
                    if (x2 - x1) < 20:
                        continue
                    assert _redacted_share(image, box) > 0.9, (clip.name, index, box)
                    checked += 1
    assert checked >= 40


def test_output_names_and_logs_hold_no_input_path(run_output, sample_video):
    out, _, result = run_output
    video, _ = sample_video
    stem = os.path.splitext(os.path.basename(video))[0]
    for path in out.rglob("*"):
        assert stem not in path.name
        if path.is_file():
            assert video.encode() not in path.read_bytes()
    assert video not in result.stderr and video not in result.stdout


def test_redact_video_keeps_frames_and_timing(tmp_path, sample_video):
    video, boxes = sample_video
    dest = tmp_path / "redacted.mov"
    result = egoveil("redact", video, str(dest), "--redact", "faces")
    assert result.returncode == 0, result.stderr
    with av.open(video) as src, av.open(str(dest)) as dst:
        src_times = [round(f.time, 3) for f in src.decode(video=0)]
        assert [s.type for s in dst.streams] == ["video"]
        frames = list(dst.decode(video=0))
    assert [round(f.time, 3) for f in frames] == src_times
    image = frames[10].to_ndarray(format="rgb24")
    for box in boxes[10]:
        assert _redacted_share(image, box) > 0.9


def test_redact_image(tmp_path):
    from PIL import Image
    from skimage import data

    src = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(src)
    dest = tmp_path / "out.jpg"
    result = egoveil("redact", str(src), str(dest), "--redact", "faces")
    assert result.returncode == 0, result.stderr
    image = np.asarray(Image.open(dest).convert("RGB"))
    assert _redacted_share(image, (190, 70, 260, 170)) > 0.9


@pytest.mark.parametrize("args, message", [
    (["run", "--input", "/nonexistent/*.mp4", "--output", "{tmp}/o", "--key-file", "{key}"],
     "--input #1 matches no file"),
    (["run", "--input", "{video}", "--output", "{tmp}/o"], "no pseudonym key"),
    (["run", "--input", "{video}", "--output", "{tmp}/o", "--key-file", "{key}",
      "--encoder", "{tmp}", "--redact", "faces"], "cannot load the --encoder folder"),
    (["run", "--input", "{video}", "--output", "{tmp}/o", "--key-file", "{key}",
      "--redact", "plates,text"], "--redact must include faces"),
    (["run", "--input", "{video}", "--output", "{tmp}/o", "--key-file", "{key}",
      "--encoder", "random:vjepa2-tiny", "--frobnicate"], "unknown option --frobnicate"),
    (["run", "--input", "{video}", "--output", "{tmp}/o", "--key-file", "{key}",
      "--encoder", "random:vjepa2-tiny", "--mask-scale", "1.0"], "mask_scale must be"),
    (["run", "--input", "{video}", "--output", "{tmp}/o", "--key-file", "{key}",
      "--encoder", "random:vjepa2-tiny", "--detector", "yunet"], "yunet needs the model file"),
    (["run", "--input", "{video}", "--output", "{tmp}/o", "--key-file", "{key}",
      "--encoder", "random:vjepa2-tiny", "--location-geohash", "7"], "between 1 and 5"),
    (["erase", "{tmp}", "--key-file", "{key}"], "name what to erase"),
    (["erase", "{tmp}", "--wearer", "alice", "--key-file", "{key}"],
     "not a published egoveil output"),
    (["redact", "/nonexistent.mp4", "{tmp}/x.mp4"], "INPUT does not exist"),
    (["redact", "{video}", "{tmp}/x.gif"], "a video must be written as"),
])
def test_user_mistakes_get_one_line(tmp_path, sample_video, key_file, args, message):
    video, _ = sample_video
    argv = [a.format(tmp=tmp_path, key=key_file, video=video) for a in args]
    result = egoveil(*argv)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("egoveil: error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert str(tmp_path) not in lines[0] and video not in lines[0]


def test_demo_runs_offline_and_says_the_encoder_is_not_pretrained(tmp_path):
    # A child process: huggingface_hub reads HF_HUB_OFFLINE when it is imported.
    result = egoveil_process("demo", str(tmp_path / "demo"), "--no-progress",
                     env={"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "https://hub.invalid"})
    assert result.returncode == 0, result.stderr
    assert "randomly initialised" in result.stderr and "not pretrained" in result.stderr
    assert "throw-away pseudonym key (for this demo only)" in result.stderr
    assert "1 recordings excluded" in result.stderr
    out = tmp_path / "demo" / "output"
    table = pq.read_table(next((out / "latents").glob("part-00000-*.parquet")))
    assert set(table.column("encoder_pretrained").to_pylist()) == {False}
    assert len(set(table.column("recording_id").to_pylist())) == 2
    assert len(set(table.column("wearer_id").to_pylist())) == 2
    record = json.loads((out / "audit" / "record.json").read_text())
    assert record["consent_checked"] and record["encoder"]["pretrained"] is False
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for raw in (b"wearer-alice", b"wearer-bob", b"EG1-SN", b"48.8584", b"walk_alice",
                        *SIDE_TRACK_STRINGS):
                assert raw not in data, (path, raw)
