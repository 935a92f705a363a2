"""What an outside probe broke (issue 17), each case built here and checked on real outputs:
concurrent runs, unbounded segments, special and oversized files, conflicting and
non-UTF-8 manifests, symlinked output folders, and the smaller findings."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import apache_beam as beam
import av
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.samples import make_recording
from schemas.audit import EVENTS_FILE
from tests.cli import egoveil
from transforms.discover import DiscoverRecordings, normalize_uri
from transforms.media.inputs import DecodeCaps, MediaError, content_sha256
from transforms.media.video import probe
from transforms.segments import plan_segments

SMALL = {"width": 320, "height": 180, "fps": 10}


def write_frames(path: Path, count: int, time_base: Fraction, step: int, *, rate: int = 30,
                 container_format: str | None = None, options: dict | None = None,
                 size: int = 32) -> None:
    """``count`` tiny grey frames ``step`` ticks of ``time_base`` apart (PyAV, H.264)."""
    with av.open(str(path), "w", format=container_format, options=options or {}) as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = time_base
        image = np.full((size, size, 3), 90, np.uint8)
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i * step, time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def no_duration(path: Path, count: int) -> None:
    """A Matroska file written as a live stream: its header declares no duration."""
    write_frames(path, count, Fraction(1, 1000), 33, container_format="matroska",
                 options={"live": "1"})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bytes_read() -> int:
    """Bytes this process has read through read() and friends (Linux /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def _in_child(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` in a child process: a call that hangs fails the test instead of it."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------- item 8: special files


def test_special_files_are_refused_from_stat_without_reading(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    link = tmp_path / "zero.mp4"
    link.symlink_to("/dev/zero")
    # Each in a child process: on a FIFO or /dev/zero an open() or a read loop never ends.
    for path in (fifo, link, Path("/dev/zero"), tmp_path):
        child = _in_child(
            "from transforms.media.inputs import content_sha256, MediaError\n"
            f"try:\n    content_sha256({str(path)!r}, 1 << 40)\n"
            "except MediaError as exc:\n    print(exc.reason, exc.detail)\n", timeout=60)
        assert child.returncode == 0, child.stderr
        assert child.stdout.startswith("unsupported not a regular file"), (path, child.stdout)


def test_a_file_above_the_size_cap_is_refused_before_a_byte_is_read(tmp_path):
    sparse = tmp_path / "huge.mp4"
    with open(sparse, "wb") as handle:
        handle.truncate(8 * 1024**3)  # 8 GB that take no space
    before = _bytes_read()
    with pytest.raises(MediaError) as exc:
        content_sha256(str(sparse), 1024**3)
    assert exc.value.reason == "too_large" and "8589934592 bytes" in exc.value.detail
    assert _bytes_read() - before < 64 * 1024  # stat only; the old loop read 4 MB blocks


# ------------------------------------------------------------- item 2: unbounded segments


def test_frame_rate_and_frame_count_are_capped_before_decoding(tmp_path):
    fast = tmp_path / "fast.mp4"
    write_frames(fast, 2000, Fraction(1, 100_000), 1, rate=100_000)  # 0.02 s of 100,000 fps
    with pytest.raises(MediaError, match="frame rate 100000 fps is above the cap of 240"):
        probe(str(fast))
    normal = tmp_path / "normal.mp4"
    write_frames(normal, 60, Fraction(1, 1000), 33)
    assert probe(str(normal)).frame_count == 60
    # Without a declared duration, the packets say how long it is, and the cap holds.
    live = tmp_path / "live.mkv"
    no_duration(live, 300)
    with pytest.raises(MediaError, match="measured from the packets"):
        probe(str(live), DecodeCaps(max_duration_s=5.0))


def test_a_file_without_a_duration_is_measured_and_cut_like_one_with(tmp_path):
    live, declared = tmp_path / "live.mkv", tmp_path / "declared.mkv"
    no_duration(live, 300)
    write_frames(declared, 300, Fraction(1, 1000), 33, container_format="matroska")
    with av.open(str(live)) as container:
        assert container.duration is None and container.streams.video[0].duration is None
    measured = probe(str(live))
    assert measured.duration_s == pytest.approx(probe(str(declared)).duration_s, abs=0.05)
    assert measured.frame_count == 300

    from schemas.elements import Recording

    def segments(info):
        rec = Recording(uri="x", content_sha256="0" * 64, recording_id="0" * 32,
                        wearer_id=None, device_id=None, video=info)
        return [(s.start_s, s.end_s) for s in plan_segments(rec, 16, 2.0)]
    assert len(segments(measured)) == 5 and segments(measured) == segments(probe(str(declared)))


def test_segments_hold_at_most_a_bounded_number_of_frames():
    from schemas.elements import Recording, VideoInfo
    from transforms.segments import MAX_SEGMENT_FRAMES, segment_frame_limit

    info = VideoInfo(width=32, height=32, fps=240.0, duration_s=60.0, frame_count=14400,
                     rotation=0, codec="h264", has_audio=False)
    rec = Recording(uri="x", content_sha256="0" * 64, recording_id="0" * 32, wearer_id=None,
                    device_id=None, video=info)
    segments = plan_segments(rec, 32, segment_seconds=60.0)  # a minute asked for
    assert all(round((s.end_s - s.start_s) * 240) <= MAX_SEGMENT_FRAMES for s in segments)
    assert segments[-1].end_s >= 60.0 and len(segments) == 15
    assert max(segment_frame_limit(s) for s in segments) <= 2 * MAX_SEGMENT_FRAMES


# ------------------------------------------------------------- items 9, 11: the manifest


def test_conflicting_manifest_lines_are_dead_letters_and_duplicates_one_input(tmp_path,
                                                                              key_file, key):
    lines = [b"\xef\xbb\xbf" + json.dumps({"uri": "a.mp4", "wearer_id": "alice"}).encode(),
             json.dumps({"uri": "a.mp4", "wearer_id": "alice"}).encode(),  # the same again
             json.dumps({"uri": "b.mp4", "wearer_id": "alice"}).encode(),
             json.dumps({"uri": "b.mp4", "wearer_id": "bob", "stereo": "sbs"}).encode(),
             b'{"uri": "caf\xe9.mp4", "wearer_id": "carol"}',  # Latin-1, not UTF-8
             json.dumps({"uri": "c.mp4"}).encode()]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    with TestPipeline() as p:
        found = p | DiscoverRecordings([], str(manifest), key_file)
        assert_that(found.requests | beam.Map(lambda r: (os.path.basename(r.uri), r.wearer_id)),
                    equal_to([("a.mp4", "alice"), ("c.mp4", None)]))
        b_id = key.pseudonym("input", normalize_uri(str(tmp_path / "b.mp4")))
        assert_that(found.deadletters | beam.Map(lambda d: (d.stage, d.reason, d.input_id
                                                            == b_id, d.detail)),
                    equal_to([("discover", "manifest_conflict", True,
                               "2 manifest lines name this file and disagree on wearer_id, "
                               "stereo; it was not processed under any of them"),
                              ("discover", "bad_manifest", False, "not valid UTF-8 (byte 13)")]),
                    label="deadletters")
        assert_that(found.audit | beam.Map(lambda e: (e.kind, e.counts)),
                    equal_to([("manifest_conflict",
                               {"lines": 2, "fields": ["wearer_id", "stereo"]})]), label="audit")


# ------------------------------------------------------------- item 1: the output lock


def test_one_holder_at_a_time_and_a_waiting_one_gets_it(tmp_path):
    from pipeline.output_lock import OutputBusy, hold_output

    out = str(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from pipeline.output_lock import hold_output\n"
        f"with hold_output({out!r}, 'run', 'aaaaaaaaaaaaaaaa'):\n"
        "    print('held', flush=True)\n    time.sleep(3)\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(OutputBusy, match=r"in use by run aaaaaaaaaaaaaaaa \(process \d+"):
        with hold_output(out, "erase", "bbbbbbbbbbbbbbbb"):
            pass
    started = time.monotonic()
    with hold_output(out, "erase", "bbbbbbbbbbbbbbbb", wait_s=60):
        assert time.monotonic() - started > 0.5  # it waited for the other one
        assert json.loads((tmp_path / ".lock").read_text())["op_id"] == "bbbbbbbbbbbbbbbb"
    assert holder.wait() == 0
    assert not (tmp_path / ".lock").exists()  # removed by its holder on the way out
    # A holder that is killed releases it at once (the kernel drops a dead process's lock).
    killed = subprocess.Popen([sys.executable, "-c", (
        "import os\nfrom pipeline.output_lock import hold_output\n"
        f"with hold_output({out!r}, 'run', 'cccccccccccccccc'):\n"
        "    print('held', flush=True)\n    os.kill(os.getpid(), 9)\n")],
        stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline().strip() == "held" and killed.wait() == -9
    with hold_output(out, "run", "dddddddddddddddd"):
        pass


def test_the_object_store_lock_lets_one_of_two_racing_launchers_through(tmp_path):
    """The best effort for gs:// and s3:// (a marker read back after it settles), on a local
    folder: of two launchers that both find no marker, only the one whose marker stays wins;
    a marker of a dead process of this host is taken over."""
    from pipeline.output_lock import _MarkerLock, holder_here

    won = []

    def launch(op_id: str) -> None:
        lock = _MarkerLock(str(tmp_path), settle_s=0.5)
        if lock.try_acquire(holder_here("run", op_id)):
            won.append(op_id)
    racers = [threading.Thread(target=launch, args=(f"{i:016x}",)) for i in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert len(won) == 1
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    marker = json.loads((tmp_path / ".lock").read_text())
    (tmp_path / ".lock").write_text(json.dumps(dict(marker, pid=int(dead))))
    assert _MarkerLock(str(tmp_path), settle_s=0.1).try_acquire(holder_here("run", "e" * 16))


@pytest.fixture(scope="module")
def walk(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("walk") / "walk.mp4"
    make_recording(str(path), seconds=1.0, **SMALL, seed=1)
    return path


def test_two_runs_into_one_output_take_turns_or_refuse(walk, tmp_path, key_file,
                                                        tiny_encoder):
    out = tmp_path / "out"
    args = ["run", "--input", str(walk), "--output", str(out), "--key-file", key_file,
            "--encoder", tiny_encoder, "--clips", "--no-progress"]
    first = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / ".lock").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first.poll() is None, "the first run ended before the others started"
    time.sleep(1.0)  # the second and third start a second or two after the first
    waiting = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args,
                                "--wait-for-lock", "600", "--segment-seconds", "0.5"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    refused = egoveil(*args)
    assert refused.returncode == 2, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("egoveil:")]
    assert len(errors) == 1 and "--output is in use by run" in errors[0], refused.stderr
    assert "--wait-for-lock" in errors[0] and str(out) not in refused.stderr
    for proc in (first, waiting):
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr

    verified = egoveil("audit", "verify", str(out))
    assert verified.returncode == 0, verified.stderr
    events = [json.loads(line) for line in (out / EVENTS_FILE).read_text().splitlines()]
    sealed = [e["op_id"] for e in events if e["kind"] == "files_sealed"]
    assert len(sealed) == 2 and len(set(sealed)) == 2  # both runs are in the log
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run_id"] == sealed[-1]
    for entry in manifest["files"]:
        assert (out / entry["path"]).exists()
    assert not (out / ".lock").exists() and not list((out / ".staging").iterdir())


# ------------------------------------------------------------- hostile inputs, one run


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, key_file, tiny_encoder):
    """One run over what the probe tried: a 100,000-fps file, a file without a duration, a
    FIFO, /dev/zero (named by the manifest and through a link), a sparse file above the
    size cap, a manifest with a byte-order mark, a Latin-1 line, a duplicate line and two
    lines that disagree."""
    root = tmp_path_factory.mktemp("hostile")
    inputs = root / "inputs"
    inputs.mkdir()
    make_recording(str(inputs / "walk.mp4"), seconds=1.0, **SMALL, seed=1)
    make_recording(str(inputs / "other.mp4"), seconds=1.0, **SMALL, seed=2)
    write_frames(inputs / "fast.mp4", 20_000, Fraction(1, 100_000), 1, rate=100_000)
    no_duration(inputs / "no duration.mkv", 300)
    os.mkfifo(inputs / "pipe.mp4")
    (inputs / "zero.mp4").symlink_to("/dev/zero")
    with open(inputs / "sparse.mp4", "wb") as handle:
        handle.truncate(4 * 1024**3)
    manifest = root / "manifest.jsonl"
    manifest.write_bytes(b"\n".join([
        b"\xef\xbb\xbf" + json.dumps({"uri": "inputs/walk.mp4", "wearer_id": "alice"}).encode(),
        json.dumps({"uri": "inputs/walk.mp4", "wearer_id": "alice"}).encode(),
        json.dumps({"uri": "inputs/other.mp4", "wearer_id": "alice"}).encode(),
        json.dumps({"uri": "inputs/other.mp4", "wearer_id": "bob"}).encode(),
        b'{"uri": "inputs/caf\xe9.mp4", "wearer_id": "carol"}',
        json.dumps({"uri": "/dev/zero", "wearer_id": "dave"}).encode()]) + b"\n")
    out = root / "out"
    tmp = root / "tmp"
    tmp.mkdir()
    started = time.monotonic()
    result = egoveil("run", "--input", str(inputs), "--manifest", str(manifest), "--output",
                     str(out), "--key-file", key_file, "--encoder", tiny_encoder,
                     "--segment-seconds", "2", "--max-input-gb", "0.001",
                     "--max-failure-rate", "1", "--no-progress", env={"TMPDIR": str(tmp)})
    return root, out, tmp, result, time.monotonic() - started


def test_hostile_inputs_become_dead_letters_and_the_rest_is_published(hostile, key):
    root, out, tmp, result, wall_s = hostile
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    inputs = root / "inputs"

    def input_id(path) -> str:
        return key.pseudonym("input", normalize_uri(str(path)))
    letters: dict = {}
    for line in (out / "deadletter" / "deadletters.jsonl").read_text().splitlines():
        letter = json.loads(line)
        letters.setdefault(letter["input_id"], []).append((letter["stage"], letter["reason"]))
    expected = {
        input_id(inputs / "fast.mp4"): [("admit", "too_large")],        # item 2
        input_id(inputs / "pipe.mp4"): [("admit", "unsupported")],      # item 8
        input_id(inputs / "zero.mp4"): [("admit", "unsupported")],
        input_id("/dev/zero"): [("admit", "unsupported")],
        input_id(inputs / "sparse.mp4"): [("admit", "too_large")],
        input_id(inputs / "other.mp4"): [("discover", "manifest_conflict")],  # item 9
    }
    for name, wanted in expected.items():
        assert letters.pop(name) == wanted
    assert list(letters.values()) == [[("discover", "bad_manifest")]]  # item 11: Latin-1
    dead = [json.loads(line) for line in
            (out / "deadletter" / "deadletters.jsonl").read_text().splitlines()]
    assert {d["wearer_id"] for d in dead if d["stage"] == "admit"} == \
        {None, key.pseudonym("wearer", "dave")}  # the manifest's wearer, as a pseudonym

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["inputs"] == 9 and manifest["totals"]["inputs_failed"] == 7
    events = [json.loads(line) for line in (out / EVENTS_FILE).read_text().splitlines()]
    live = key.pseudonym("recording", _sha(inputs / "no duration.mkv"))
    segments = [e for e in events if e["kind"] == "segment_anonymized"
                and e["recording_id"] == live]
    assert len(segments) == 5  # 9.9 s in segments of 2.1 s, not one open-ended segment
    assert [e["counts"] for e in events if e["kind"] == "manifest_conflict"] == \
        [{"lines": 2, "fields": ["wearer_id"]}]
    walk = key.pseudonym("recording", _sha(inputs / "walk.mp4"))
    admitted = [e for e in events if e["kind"] == "recording_admitted"]
    assert {e["recording_id"] for e in admitted} == {walk, live}  # the duplicate line: once
    assert wall_s < 600


def test_a_hostile_run_leaves_a_folder_that_verifies_and_nothing_behind(hostile):
    root, out, tmp, _, _ = hostile
    verified = egoveil("audit", "verify", str(out))
    assert verified.returncode == 0, verified.stderr
    assert not list((out / ".staging").iterdir()) and not (out / ".lock").exists()
    assert not list(tmp.glob("egoveil-progress-*"))  # item 11


def test_a_report_is_never_written_into_the_folder_it_reports_on(hostile):
    _, out, _, _, _ = hostile
    refused = egoveil("audit", "report", str(out), "--html", str(out / "report.html"))
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "egoveil: error: --html: FILE is inside DIR; write it outside the output folder "
        "(egoveil never writes into the folder it checks)"]
    assert not (out / "report.html").exists()


# ------------------------------------------------------------- item 2: memory

SEGMENT_PEAK = """
import hashlib, resource, sys
from privacy.config import AnonymizationConfig
from privacy.verification import VerificationConfig
from schemas.elements import Clip, Recording
from transforms.anonymize import AnonymizeSegmentFn, ClipPlan
from transforms.media.video import probe
from transforms.models.encoders import resolve_encoder
from transforms.segments import plan_segments

uri, key_file, encoder = sys.argv[1:]
sha = hashlib.sha256(open(uri, "rb").read()).hexdigest()
rec = Recording(uri=uri, content_sha256=sha, recording_id=sha[:32], wearer_id=None,
                device_id=None, video=probe(uri))
plan = ClipPlan(frames_per_clip=8, frame_stride=2,
                geometry=resolve_encoder(encoder, resolution=512).geometry)
fn = AnonymizeSegmentFn(AnonymizationConfig(verification=VerificationConfig(verifier="none")),
                        plan, key_file, None, "0" * 64)
fn.setup()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
segments = plan_segments(rec, plan.span)
clips = sum(isinstance(out, Clip) for segment in segments for out in fn.process(segment))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(segments), clips, (peak - before) / 1024)
"""


def test_memory_does_not_depend_on_a_declared_duration(tmp_path, key_file, tiny_encoder):
    """The probe measured 1.43 GB for a file without a duration against 0.88 GB for the
    same 200 s with one: an open-ended segment held every clip until it ended. Here the
    anonymize stage, which holds a segment's clips until the segment is verified, on 60 s
    at 20 fps with 512-pixel encoder frames (600 of them, 470 MB if held at once), in a
    child process whose peak resident memory the kernel reports."""
    peaks = {}
    for name, options in (("declared.mkv", {}), ("live.mkv", {"live": "1"})):
        path = tmp_path / name
        write_frames(path, 1200, Fraction(1, 1000), 50, rate=20, container_format="matroska",
                     options=options, size=64)
        child = subprocess.run([sys.executable, "-c", SEGMENT_PEAK, str(path), key_file,
                                tiny_encoder], capture_output=True, text=True, timeout=600)
        assert child.returncode == 0, child.stderr
        segments, clips, grown_mb = child.stdout.split()
        assert (int(segments), int(clips)) == (15, 75)
        peaks[name] = float(grown_mb)
    print(f"memory grown while anonymizing (MB): {peaks}")
    assert peaks["live.mkv"] < peaks["declared.mkv"] + 100, peaks
    assert peaks["live.mkv"] < 200, peaks


# ------------------------------------------------------------- items 5, 7: publishing


def _rows(key, count: int, seed: int) -> list:
    from schemas.elements import LatentRow

    recording = key.pseudonym("recording", f"content-{seed}")
    return [LatentRow(
        clip_id=hashlib.sha256(f"clip{seed}-{i}".encode()).hexdigest()[:32],
        recording_id=recording, wearer_id=key.pseudonym("wearer", "alice"), view="rgb",
        segment_index=i, clip_index=0, start_s=float(i), end_s=float(i + 1), frame_count=8,
        fps=10.0, encoder_id="random:test", encoder_pretrained=False,
        embedding=(np.arange(4, dtype="<f2") + i).tobytes(), faces_redacted=1,
        qa_status="redacted_unverified") for i in range(count)]


def _publish(out: Path, key, key_file: str, run_id: str, seed: int) -> None:
    """Publish a few rows as a run does (shard writer, publish step), without a launcher."""
    from schemas.stages import PublishInputs
    from tests.records import run_record
    from transforms.publish import Publish
    from transforms.write_shards import WriteLatentShards

    staging = str(out / ".staging" / run_id)
    with TestPipeline() as p:
        shards = (p | "Rows" >> beam.Create(_rows(key, 3, seed))
                  | WriteLatentShards(staging, 4, {"run": "test"}))
        empty = [p | f"Empty{i}" >> beam.Create([]) for i in range(3)]
        PublishInputs(shards, *empty, p | "Inputs" >> beam.Create([1])) | Publish(
            str(out), staging, run_record(key.key_id, run_id=run_id), key_file=key_file)


def _verify(out: Path):
    from privacy.audit_verify import verify_output
    from transforms.stores.filesystems import FileSystemsStore

    return verify_output(FileSystemsStore(str(out)))


def test_a_disk_that_fills_up_while_publishing_leaves_the_previous_state(
        tmp_path, key, key_file, monkeypatch):
    import errno

    from apache_beam.io.filesystems import FileSystems

    out = tmp_path / "out"
    _publish(out, key, key_file, "1" * 16, seed=1)
    before = {p: (out / p).read_bytes() for p in ("manifest.json", "audit/record.json",
                                                  "audit/events.jsonl")}
    create = FileSystems.create

    def full_disk(path, *args, **kwargs):
        if "validation.json" in path:  # the third small file: record.json came before it
            raise OSError(errno.ENOSPC, "No space left on device")
        return create(path, *args, **kwargs)
    monkeypatch.setattr(FileSystems, "create", full_disk)
    with pytest.raises(Exception, match="No space left on device"):
        _publish(out, key, key_file, "2" * 16, seed=2)
    monkeypatch.undo()
    assert {p: (out / p).read_bytes() for p in before} == before
    assert _verify(out).findings == []
    _publish(out, key, key_file, "3" * 16, seed=3)  # the next publish goes through
    assert _verify(out).findings == []


def test_only_files_a_manifest_named_are_deleted_and_never_through_a_link(
        tmp_path, key, key_file):
    """The probe's run deleted a file it never wrote from a shared folder DIR/latents
    linked to. Publishing deletes what the manifest it replaces named, nothing else."""
    out = tmp_path / "out"
    _publish(out, key, key_file, "1" * 16, seed=1)
    first = {f["path"] for f in json.loads((out / "manifest.json").read_text())["files"]
             if f["kind"] == "latents"}
    foreign = out / "latents" / "part-00000-aaaaaaaaaaaa.parquet"  # named like a shard
    foreign.write_bytes(b"someone else's")
    _publish(out, key, key_file, "2" * 16, seed=2)
    assert foreign.exists()
    assert not any((out / p).exists() for p in first)  # the first run's shards went
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["retired"]) == first

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "part-00000-bbbbbbbbbbbb.parquet").write_bytes(b"another team's shard")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "latents").symlink_to(shared, target_is_directory=True)
    _publish(linked, key, key_file, "1" * 16, seed=1)
    _publish(linked, key, key_file, "2" * 16, seed=2)
    assert (shared / "part-00000-bbbbbbbbbbbb.parquet").read_bytes() == b"another team's shard"
    assert len(list(shared.iterdir())) == 3  # never deleted through the link, ours included
    refused = egoveil("run", "--input", str(tmp_path), "--output", str(linked),
                      "--key-file", key_file)
    assert refused.returncode == 2
    assert "--output: latents is a symbolic link" in refused.stderr, refused.stderr


def test_max_pixels_cannot_pass_what_the_detector_takes(tmp_path, key_file, tiny_encoder,
                                                        sample_video):
    from pipeline.errors import UserError
    from pipeline.runner import prepare
    from privacy.detectors.base import MAX_FRAME_PIXELS

    assert DecodeCaps().max_pixels == MAX_FRAME_PIXELS == 4096 * 4096
    argv = ["--input", sample_video[0], "--output", str(tmp_path / "o"), "--key-file",
            key_file, "--encoder", tiny_encoder]
    with pytest.raises(UserError, match="--max-pixels must be between 1 and 16777216"):
        prepare(argv + ["--max-pixels", str(7680 * 4320)])
    with pytest.raises(UserError, match="--max-fps must be above 0 and at most 1000"):
        prepare(argv + ["--max-fps", "5000"])
