"""Surviving the real world (PRIVACY.md 16-20): bad inputs beside good ones, the failure-rate
gate, runs killed midway or while publishing, and reruns that redo nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.samples import make_recording
from tests.cli import egoveil
from tests.containers import write_audio_only
from transforms.discover import normalize_uri

SMALL = {"width": 320, "height": 180, "fps": 10}


def _encode(path: Path, codec: str, frames: list[np.ndarray], times: list[float] | None = None,
            streams: int = 1, pix_fmt: str = "yuv420p") -> None:
    """Frames into a container with ``streams`` identical video tracks."""
    h, w = frames[0].shape[:2]
    times = times or [i / 10 for i in range(len(frames))]
    with av.open(str(path), "w") as container:
        outs = []
        for _ in range(streams):
            stream = container.add_stream(codec, rate=10)
            stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
            stream.codec_context.time_base = Fraction(1, 1000)
            outs.append(stream)
        for image, t in zip(frames, times):
            for stream in outs:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = int(t * 1000), Fraction(1, 1000)
                for packet in stream.encode(frame):
                    container.mux(packet)
        for stream in outs:
            for packet in stream.encode():
                container.mux(packet)


def _frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _corrupt_mjpeg(path: Path, frames: list[np.ndarray]) -> None:
    """An MJPEG AVI whose every other frame has its entropy-coded data overwritten."""
    _encode(path, "mjpeg", frames, pix_fmt="yuvj420p")
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(1)
    start = 0
    for n in range(len(frames)):
        soi = data.find(b"\xff\xd8\xff", start)
        sos = data.find(b"\xff\xda", soi)
        if soi < 0 or sos < 0:
            break
        if n % 2 == 0:
            garbage = rng.integers(0, 255, 400, dtype=np.uint8).tobytes()
            data[sos + 20:sos + 420] = garbage
        start = sos + 2
    path.write_bytes(bytes(data))


# What the folder holds: name -> the dead-letter reason it must get (None: it must be processed).
BAD = {
    "empty.mp4": "unreadable",
    "random bytes.mov": "unreadable",
    "truncated (no moov).mp4": "unreadable",
    "voice memo.mp4": "no_video",
    "huge resolution.mp4": "too_large",
    "too long.mp4": "too_large",
    "huffyuv codec.avi": "unsupported",
    "corrupt frames.avi": "corrupt_frames",
    "hls playlist.mp4": "unreadable",  # FFmpeg would fetch every URL in it
    "concat list.mp4": "unreadable",   # FFmpeg's concat demuxer would open any local file
}
REMOTE = "http://127.0.0.1:9/glasses/remote.mp4"  # no network from inside a worker
GOOD = ("walk.mp4", "rotated 90.mp4", "vfr.mkv", "two video tracks.mkv", "-leading dash.mp4",
        "spaces and ünïcode ✓.mov")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs") / "glasses"
    folder.mkdir()
    make_recording(str(folder / "walk.mp4"), seconds=1.0, **SMALL, seed=1)
    make_recording(str(folder / "rotated 90.mp4"), seconds=1.0, rotation=90, **SMALL, seed=2)
    make_recording(str(folder / "-leading dash.mp4"), seconds=1.0, **SMALL, seed=3)
    make_recording(str(folder / "spaces and ünïcode ✓.mov"), seconds=1.0, **SMALL, seed=4)
    frames = _frames_of(folder / "walk.mp4")
    _encode(folder / "vfr.mkv", "libx264", frames[:6], times=[0, .05, .3, .32, .9, 1.0])
    _encode(folder / "two video tracks.mkv", "libx264", frames[:5], streams=2)
    # Delivered twice under another name: processed once.
    (folder / "walk copy.mp4").write_bytes((folder / "walk.mp4").read_bytes())

    (folder / "empty.mp4").write_bytes(b"")
    rng = np.random.default_rng(0)
    (folder / "random bytes.mov").write_bytes(rng.integers(0, 255, 40000, np.uint8).tobytes())
    good = (folder / "walk.mp4").read_bytes()
    (folder / "truncated (no moov).mp4").write_bytes(good[: len(good) // 2])
    write_audio_only(folder / "voice memo.mp4")
    make_recording(str(folder / "huge resolution.mp4"), width=1280, height=720, fps=10,
                   seconds=0.2, audio=False)
    make_recording(str(folder / "too long.mp4"), width=160, height=90, fps=2, seconds=30,
                   audio=False)
    _encode(folder / "huffyuv codec.avi", "huffyuv", frames[:3], pix_fmt="yuv422p")
    _corrupt_mjpeg(folder / "corrupt frames.avi", frames)
    (folder / "hls playlist.mp4").write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nhttp://127.0.0.1:9/a.ts\n"
        "#EXT-X-ENDLIST\n")
    (folder / "concat list.mp4").write_text(f"ffconcat version 1.0\nfile '{folder}/walk.mp4'\n")

    # The manifest: sidecars with extra fields, a path through "..", a broken line.
    sub = folder / "sub"
    sub.mkdir()
    lines = [json.dumps({"uri": "walk.mp4", "wearer_id": "alice", "device_serial": "SN-0042",
                         "not_in_the_schema": "dropped"}),
             json.dumps({"uri": "sub/../-leading dash.mp4", "wearer_id": "bob"}),
             '{"uri": "rotated 90.mp4", "wearer_id": ',
             json.dumps({"uri": "vfr.mkv", "wearer_id": 42}),
             json.dumps({"uri": REMOTE})]
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _run_args(inputs: Path, out: Path, key_file: str, encoder: str, *extra: str) -> list[str]:
    return ["run", "--input", str(inputs), "--manifest", str(inputs / "manifest.jsonl"),
            "--output", str(out), "--key-file", key_file, "--encoder", encoder,
            "--max-pixels", str(640 * 360), "--max-duration-s", "20", "--no-progress", *extra]


@pytest.fixture(scope="module")
def gated_then_published(inputs, tmp_path_factory, key_file, tiny_encoder):
    out = tmp_path_factory.mktemp("bad-inputs") / "out"
    gated = egoveil(*_run_args(inputs, out, key_file, tiny_encoder))
    published = egoveil(*_run_args(inputs, out, key_file, tiny_encoder,
                                   "--max-failure-rate", "1"))
    return out, gated, published


def test_above_the_failure_rate_the_job_fails_with_one_line(gated_then_published):
    out, gated, _ = gated_then_published
    assert gated.returncode == 1, gated.stderr
    errors = [line for line in gated.stderr.splitlines() if line.startswith("egoveil: error:")]
    assert len(errors) == 1 and "Traceback" not in gated.stderr, gated.stderr
    assert "inputs failed" in errors[0] and "above --max-failure-rate 0.1" in errors[0]
    assert "nothing was published" in errors[0] and "unreadable" in errors[0]
    staged = list((out / ".staging").glob("*/deadletters.jsonl"))
    assert len(staged) == 1 and staged[0].read_text().count("\n") == len(BAD) + 3


def test_bad_inputs_become_dead_letters_and_good_ones_shards(gated_then_published, inputs,
                                                             key):
    out, _, result = gated_then_published
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    by_input = {}
    for line in (out / "deadletter" / "deadletters.jsonl").read_text().splitlines():
        letter = json.loads(line)
        by_input.setdefault(letter["input_id"], set()).add((letter["stage"], letter["reason"]))
    for name, reason in BAD.items():
        input_id = key.pseudonym("input", normalize_uri(str(inputs / name)))
        assert {r for _, r in by_input.pop(input_id, set())} == {reason}, name
    assert by_input.pop(key.pseudonym("input", REMOTE)) == {("admit", "unreadable")}
    # The two bad manifest lines: a broken line and a wearer id that is not a string.
    assert sorted(by_input.values(), key=str) == [{("discover", "bad_manifest")}] * 2

    manifest = json.loads((out / "manifest.json").read_text())
    recordings = set()
    for entry in manifest["files"]:
        if entry["kind"] == "latents":
            table = pq.read_table(out / entry["path"])
            recordings |= set(table.column("recording_id").to_pylist())
            assert "not_in_the_schema" not in table.schema.names
    expected = {key.pseudonym("recording", _sha(inputs / name)) for name in GOOD}
    assert recordings == expected  # every good input, the copy of walk.mp4 once
    totals = manifest["totals"]
    # Beside the files: the copy, two bad manifest lines and the remote URI.
    assert totals["inputs"] == len(GOOD) + len(BAD) + 1 + 2 + 1
    assert totals["inputs_failed"] == len(BAD) + 3
    assert f"{len(BAD) + 3} of {totals['inputs']} inputs failed" in result.stderr
    assert "segments reused from an earlier run" in result.stderr  # the gated run's work
    for path in out.rglob("*"):
        for name in (*GOOD, *BAD):
            assert Path(name).stem not in path.name, path
    assert str(inputs) not in result.stderr


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------ killed runs and reruns


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "long walk.mp4"
    make_recording(str(path), seconds=8.0, **SMALL)
    return path


def _args(video: Path, out: Path, key_file: str, encoder: str, *extra: str) -> list[str]:
    return ["run", "--input", str(video), "--output", str(out), "--key-file", key_file,
            "--encoder", encoder, "--segment-seconds", "1", "--batch-size", "1",
            "--no-progress", *extra]


def _latents(out: Path) -> dict[str, str]:
    manifest = json.loads((out / "manifest.json").read_text())
    return {f["path"]: f["sha256"] for f in manifest["files"] if f["kind"] == "latents"}


@pytest.fixture(scope="module")
def clean_run(long_recording, tmp_path_factory, key_file, tiny_encoder) -> Path:
    out = tmp_path_factory.mktemp("clean") / "out"
    result = egoveil(*_args(long_recording, out, key_file, tiny_encoder))
    assert result.returncode == 0, result.stderr
    return out


def test_a_run_killed_midway_resumes_to_the_same_shards(long_recording, clean_run, tmp_path,
                                                        key_file, tiny_encoder):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli",
                             *_args(long_recording, out, key_file, tiny_encoder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / ".cache").rglob("*.arrow"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()

    resumed = egoveil(*_args(long_recording, out, key_file, tiny_encoder))
    assert resumed.returncode == 0, resumed.stderr
    assert "segments reused from an earlier run" in resumed.stderr
    assert _latents(out) == _latents(clean_run)
    for path in _latents(out):
        table = pq.read_table(out / path, columns=["clip_id"])
        ids = table.column("clip_id").to_pylist()
        assert len(ids) == len(set(ids))  # no duplicates
    assert egoveil("audit", "verify", str(out)).returncode == 0


def test_a_rerun_redoes_nothing_and_publishes_the_same_content(long_recording, clean_run,
                                                               key_file, tiny_encoder):
    before = json.loads((clean_run / "manifest.json").read_text())
    result = egoveil(*_args(long_recording, clean_run, key_file, tiny_encoder))
    assert result.returncode == 0, result.stderr
    after = json.loads((clean_run / "manifest.json").read_text())
    events = [json.loads(line) for line in
              (clean_run / "audit" / "events.jsonl").read_text().splitlines()]

    def kinds(run_id: str) -> list[str]:
        return [e["kind"] for e in events if e["op_id"] == run_id]

    done = kinds(before["run_id"]).count("segment_anonymized")
    assert done > 2 and kinds(after["run_id"]).count("segment_cached") == done
    assert f"{done} segments reused" in result.stderr
    assert after["content_sha256"] == before["content_sha256"]
    assert after["totals"] == before["totals"]
    assert {f["path"]: f["sha256"] for f in after["files"] if f["kind"] == "latents"} == \
        {f["path"]: f["sha256"] for f in before["files"] if f["kind"] == "latents"}
    assert after["run_id"] != before["run_id"]  # the rerun is in the audit log all the same
    assert egoveil("audit", "verify", str(clean_run)).returncode == 0


def _tamper_with_a_cached_row(out: Path, wearer: str) -> None:
    """What a writer to the output folder could do: give a cached row another wearer and a
    zero embedding, keeping whatever else the file holds."""
    import pyarrow as pa

    path = sorted((out / ".cache").rglob("*.arrow"))[0]
    data = path.read_bytes()
    magic = b"egoveil-cache-v1\n"
    head = data[:len(magic) + 65] if data.startswith(magic) else b""
    table = pa.ipc.open_file(pa.py_buffer(data[len(head):])).read_all()
    width = table.schema.field("embedding").type.byte_width
    table = table.set_column(table.schema.get_field_index("wearer_id"), "wearer_id",
                             pa.array([wearer] * table.num_rows, pa.string()))
    table = table.set_column(table.schema.get_field_index("embedding"),
                             table.schema.field("embedding"),
                             pa.array([bytes(width)] * table.num_rows, pa.binary(width)))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    path.write_bytes(head + sink.getvalue().to_pybytes())


def test_a_changed_cache_entry_is_done_again_not_published(long_recording, clean_run, tmp_path,
                                                           key_file, tiny_encoder):
    out = tmp_path / "out"
    shutil.copytree(clean_run, out)
    wearer = "ab" * 16
    _tamper_with_a_cached_row(out, wearer)
    result = egoveil(*_args(long_recording, out, key_file, tiny_encoder))
    assert result.returncode == 0, result.stderr
    assert _latents(out) == _latents(clean_run)  # the segment was done again, same bytes
    for path in _latents(out):
        table = pq.read_table(out / path, columns=["wearer_id", "embedding"])
        assert wearer not in table.column("wearer_id").to_pylist()
        assert all(any(e) for e in table.column("embedding").to_pylist())
    run_id = json.loads((out / "manifest.json").read_text())["run_id"]
    events = [json.loads(line) for line in
              (out / "audit" / "events.jsonl").read_text().splitlines()]
    rejected = [e for e in events if e["op_id"] == run_id and e["kind"] ==
                "segment_cache_rejected"]
    assert len(rejected) == 1 and rejected[0]["counts"] == {"reason": "mac_mismatch"}
    assert "1 cached segments were changed after they were written" in result.stderr
    assert egoveil("audit", "verify", str(out)).returncode == 0


KILL_ON_FIRST_SHARD_MOVE = """
import os, sys
from apache_beam.io.filesystems import FileSystems
rename = FileSystems.rename
def rename_then_die(sources, destinations, *args, **kwargs):
    rename(sources, destinations, *args, **kwargs)
    if any("/latents/" in d for d in destinations):
        os._exit(137)  # the machine dies right after the first shard is in place
FileSystems.rename = rename_then_die
from pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_run_killed_while_publishing_leaves_the_previous_manifest_valid(
        long_recording, tmp_path, key_file, tiny_encoder):
    out = tmp_path / "out"
    first = egoveil(*_args(long_recording, out, key_file, tiny_encoder, "--target-shard-mb",
                           "0.0001"))  # about one row per shard
    assert first.returncode == 0, first.stderr
    assert len(_latents(out)) >= 2
    before = (out / "manifest.json").read_bytes()
    # Another configuration (other shard sizes) publishes other shards into the same folder.
    killed = subprocess.run([sys.executable, "-c", KILL_ON_FIRST_SHARD_MOVE,
                             *_args(long_recording, out, key_file, tiny_encoder,
                                    "--target-shard-mb", "1")],
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == 137, killed.stderr
    assert (out / "manifest.json").read_bytes() == before
    verified = egoveil("audit", "verify", str(out))
    assert verified.returncode == 0, verified.stderr
    # The shard it moved is named by the run's signed PUBLISHING note: a notice, since a
    # reader that lists latents/ instead of reading the manifest would see it.
    assert "audit verify: notice: latents/part-00000-" in verified.stderr
    assert "whose publish was cut short" in verified.stderr
    for entry in json.loads(before)["files"]:
        assert (out / entry["path"]).exists()

    finished = egoveil(*_args(long_recording, out, key_file, tiny_encoder,
                              "--target-shard-mb", "1"))
    assert finished.returncode == 0, finished.stderr
    assert len(_latents(out)) == 1
    assert sorted(p.name for p in (out / "latents").iterdir()) == \
        sorted(Path(p).name for p in _latents(out))  # the earlier shards are gone
    assert egoveil("audit", "verify", str(out)).returncode == 0


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} \
        if folder.exists() else set()


def test_a_run_killed_while_writing_clips_leaves_the_folder_verifying(
        long_recording, clean_run, tmp_path, key_file, tiny_encoder):
    """Clips are staged like shards: a run killed after writing some leaves none in
    clips/ (the probe's run killed at 8 s left clips that verify called added after
    publishing), and the next run cleans up what the dead one staged."""
    out = tmp_path / "out"
    shutil.copytree(clean_run, out)
    published = _files(out / "clips")
    args = _args(long_recording, out, key_file, tiny_encoder, "--clips")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if list(out.glob(".staging/*/clips/*.mp4")) or _files(out / "clips") - published:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _files(out / "clips") == published
    verified = egoveil("audit", "verify", str(out))
    assert verified.returncode == 0, verified.stderr

    finished = egoveil(*args)
    assert finished.returncode == 0, finished.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    clips = {f["path"] for f in manifest["files"] if f["kind"] == "clip"}
    assert clips and {f"clips/{name}" for name in _files(out / "clips")} == clips
    assert not list((out / ".staging").iterdir())  # the killed run's staging is gone
    assert egoveil("audit", "verify", str(out)).returncode == 0


def test_a_leftover_temporary_is_removed_by_the_next_run(long_recording, clean_run, tmp_path,
                                                         key_file, tiny_encoder):
    out = tmp_path / "out"
    shutil.copytree(clean_run, out)
    leftover = out / "audit" / "validation.json.tmp-x"  # a write that died half-way
    leftover.write_text('{"success": tr')
    assert egoveil("audit", "verify", str(out)).returncode == 1
    rerun = egoveil(*_args(long_recording, out, key_file, tiny_encoder))
    assert rerun.returncode == 0, rerun.stderr
    assert not leftover.exists()
    verified = egoveil("audit", "verify", str(out))
    assert verified.returncode == 0, verified.stderr
