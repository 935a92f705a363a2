"""Identifiers out, consent in: the ``egoveil`` command on recordings full of identifiers.

The inputs carry every identifier the tests look for (the table in ``IDENTIFIERS``
below): container metadata in both QuickTime styles (``mdta`` keys and ``udta``
atoms), an ISO 6709 location, make, model and serial, creation time, title and
comment, an audio track, a subtitle track, a GoPro-style ``gpmd`` telemetry track,
a timecode track and chapters; the manifest adds wearer ids, device serials,
capture times, locations and a field outside the allow-list; the file and folder
names are odd. After ``egoveil run --clips``, ``egoveil erase`` and ``egoveil
redact``, none of them is in any byte of any output file, nor in the console, and
PyAV, ffprobe and exiftool see one video stream and only what the muxer needs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.redact import redact_file
from pipeline.samples import SAMPLE_METADATA, SIDE_TRACK_STRINGS, make_recording
from privacy.pseudonyms import PseudonymKey
from tests.cli import egoveil
from tests.containers import exiftool_findings, ffprobe_findings, pyav_findings, raw_strings_in

WEARERS = {"alice": "alice-7731", "bob": "bob-0099", "carol": "carol-5521",
           "dave": "dave-0666"}
SERIALS = {"alice": "EG1-SN-0042-7731", "bob": "EG1-SN-0099-1234"}
LOCATIONS = {"alice": (48.8584, 2.2945), "bob": (52.5200, 13.4050)}
CAPTURE_START = "2026-05-01T10:00:00Z"
NAMES = {"alice": "-Alice's walk ü.mp4", "bob": "kitchen bob.mov", "carol": "carol street.mp4",
         "dave": "dave.mp4"}
FOLDER = "raw in ü"
EXTRA_FIELD = "alice@example.org"

# Every raw identifier, and where the tests look for it (the closing note's list).
IDENTIFIERS = {
    "container metadata (mdta keys, udta atoms: ISO 6709 location, make, model, serial, "
    "creation time, title, comment)": [v.encode() for v in SAMPLE_METADATA.values()],
    "subtitle track, gpmd telemetry track, chapter titles": list(SIDE_TRACK_STRINGS),
    "manifest: wearer ids": [w.encode() for w in WEARERS.values()],
    "manifest: device serials": [s.encode() for s in SERIALS.values()],
    "manifest: capture time": [b"2026-05-01T10:00:00", b"2026-05-01 10:00"],
    "manifest: exact locations": [b"48.8584", b"2.2945", b"52.52", b"13.405"],
    "manifest: field outside the allow-list": [EXTRA_FIELD.encode()],
    "file and folder names": [n.rsplit(".", 1)[0].encode() for n in NAMES.values()]
    + [FOLDER.encode()],
    "encoder version strings (x264 SEI, Lavc/Lavf versions)": [b"x264", b"Lavc", b"Lavf6"],
}
RAW = [raw for raws in IDENTIFIERS.values() for raw in raws]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("identifiers")
    folder = root / FOLDER
    folder.mkdir()
    paths = {name: folder / file for name, file in NAMES.items()}
    make_recording(str(paths["alice"]), seconds=1.0, fps=10, side_tracks=True,
                   metadata_atoms="mdta", seed=0)
    make_recording(str(paths["bob"]), seconds=1.0, fps=10, side_tracks=True,
                   metadata_atoms="udta", seed=1)
    make_recording(str(paths["carol"]), seconds=1.0, fps=10, seed=2)
    paths["dave"].write_bytes(os.urandom(2048))  # opened, it would be a dead letter
    lines = []
    for name in ("alice", "bob", "carol", "dave"):
        entry = {"uri": NAMES[name], "wearer_id": WEARERS[name],
                 "capture_start": CAPTURE_START, "owner_email": EXTRA_FIELD}
        if name in SERIALS:
            entry["device_serial"] = SERIALS[name]
        if name in LOCATIONS:
            entry["location"] = dict(zip(("lat", "lon"), LOCATIONS[name]))
        lines.append(json.dumps(entry))
    lines.append('{"uri": "broken line", "wearer_id": ')
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    consent = root / "consent.csv"
    consent.write_text("wearer_id,purpose,granted_at,withdrawn_at\n" + "".join(
        f"{WEARERS[n]},world-model-training,2026-01-01T00:00:00Z,\n"
        for n in ("alice", "bob", "carol"))
        + f"{WEARERS['dave']},world-model-training,2026-01-01T00:00:00Z,2026-02-01T00:00:00Z\n")
    key_path = root / "pseudonym.key"
    key = PseudonymKey.create_file(str(key_path))
    return {"root": root, "paths": paths, "manifest": str(manifest), "consent": str(consent),
            "key_file": str(key_path), "key": key, "secret": key_path.read_bytes().strip()}


def _run(inputs, out, *extra: str, key_file: bool = True, env: dict | None = None):
    args = ["run", "--manifest", inputs["manifest"], "--output", str(out),
            "--encoder", inputs["encoder"], "--no-progress", "--max-failure-rate", "1", *extra]
    if key_file:
        args += ["--key-file", inputs["key_file"]]
    result = egoveil(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def first_run(inputs, tiny_encoder, tmp_path_factory):
    inputs["encoder"] = tiny_encoder
    out = tmp_path_factory.mktemp("first") / "out"
    result = _run(inputs, out, "--consent", inputs["consent"], "--clips")
    return out, result


def _rows(out) -> pa.Table:
    manifest = json.loads((out / "manifest.json").read_text())
    return pa.concat_tables(pq.read_table(out / f["path"]) for f in manifest["files"]
                            if f["kind"] == "latents")


def _leaks(folder, console: str = "", extra: list[bytes] = ()) -> list[tuple[str, bytes]]:
    leaks = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            for raw in raw_strings_in(path.read_bytes(), RAW + list(extra)):
                leaks.append((str(path.relative_to(folder)), raw))
        for raw in RAW:
            if raw.decode() in path.name:
                leaks.append((f"name {path.name}", raw))
    for raw in raw_strings_in(console.encode(), RAW + list(extra)):
        leaks.append(("console", raw))
    return leaks


def test_inputs_carry_every_identifier(inputs):
    alice = inputs["paths"]["alice"].read_bytes()
    bob = inputs["paths"]["bob"].read_bytes()
    expected = IDENTIFIERS["container metadata (mdta keys, udta atoms: ISO 6709 location, make, "
                           "model, serial, creation time, title, comment)"]
    assert raw_strings_in(alice, expected + list(SIDE_TRACK_STRINGS)) == \
        expected + list(SIDE_TRACK_STRINGS)
    assert set(raw_strings_in(bob, RAW)) >= {b"+48.8584+002.2945/", b"EgoGlassesCo",
                                             b"Walk with Alice", *SIDE_TRACK_STRINGS[:1],
                                             b"x264"}
    for path in (inputs["paths"]["alice"], inputs["paths"]["bob"]):
        assert len(pyav_findings(str(path))) >= 5
        assert len(ffprobe_findings(str(path))) >= 5
        findings = exiftool_findings(str(path))
        assert any("GPS" in f for f in findings) and any("Make" in f for f in findings)


def test_run_clips_carry_pixels_only(first_run):
    out, _ = first_run
    clips = sorted((out / "clips").glob("*.mp4"))
    assert len(clips) == 3
    for clip in clips:
        assert pyav_findings(str(clip)) == [], clip.name
        assert ffprobe_findings(str(clip)) == [], clip.name
        assert exiftool_findings(str(clip)) == [], clip.name


def test_no_identifier_in_any_output_byte_name_or_log(first_run, inputs):
    out, result = first_run
    secret = inputs["secret"]
    assert _leaks(out, result.stderr + result.stdout, [secret]) == []
    assert inputs["key_file"].encode() not in (out / "audit" / "record.json").read_bytes()


def test_sidecar_fields_become_pseudonyms_and_offsets(first_run, inputs):
    out, _ = first_run
    key = inputs["key"]
    rows = _rows(out).to_pylist()
    by_wearer = {}
    for row in rows:
        by_wearer.setdefault(row["wearer_id"], []).append(row)
    expected = {key.pseudonym("wearer", WEARERS[n]): n for n in ("alice", "bob", "carol")}
    assert set(by_wearer) == set(expected)
    for wearer, wearer_rows in by_wearer.items():
        name = expected[wearer]
        device = key.pseudonym("device", SERIALS[name]) if name in SERIALS else None
        assert {r["device_id"] for r in wearer_rows} == {device}
        assert {r["location_cell"] for r in wearer_rows} == {None}
        assert min(r["start_s"] for r in wearer_rows) == pytest.approx(0.0, abs=0.11)
        assert max(r["end_s"] for r in wearer_rows) <= 1.5
    record = json.loads((out / "audit" / "record.json").read_text())
    assert record["key_id"] == key.key_id and record["consent_checked"] is True
    assert record["metadata"]["location"] == "dropped"
    deadletters = [json.loads(line) for line in
                   (out / "deadletter" / "deadletters.jsonl").read_text().splitlines()]
    assert [(d["stage"], d["reason"]) for d in deadletters] == [("discover", "bad_manifest")]


def test_recordings_without_consent_are_counted_and_never_opened(first_run):
    out, result = first_run
    # dave's file is random bytes: opening it would have made an 'unreadable' dead letter.
    totals = json.loads((out / "manifest.json").read_text())["totals"]
    assert totals["recordings_without_consent"] == 1
    record = json.loads((out / "audit" / "record.json").read_text())
    assert record["totals"]["recordings_without_consent"] == 1
    events = [json.loads(line) for line in
              (out / "audit" / "events.jsonl").read_text().splitlines()]
    assert [e["counts"] for e in events if e["kind"] == "consent_excluded"] == \
        [{"reason": "withdrawn"}]
    assert "1 recordings excluded without reading them" in result.stderr


def test_another_key_gives_unlinkable_pseudonyms(first_run, inputs, tmp_path):
    """Key from the environment, no consent registry, locations coarsened: nothing links."""
    out, _ = first_run
    secret = os.urandom(32).hex()  # the format `egoveil keygen` writes
    other = PseudonymKey.parse(secret.encode())
    second = tmp_path / "second"
    result = _run(inputs, second, "--location-geohash", "4", key_file=False,
                  env={"EGOVEIL_PSEUDONYM_KEY": secret})
    assert "consent is not being checked" in result.stderr
    first_rows, second_rows = _rows(out), _rows(second)
    for column in ("clip_id", "recording_id", "wearer_id", "device_id"):
        a = set(first_rows.column(column).to_pylist()) - {None}
        b = set(second_rows.column(column).to_pylist()) - {None}
        assert a and b and not a & b, column
    cells = {r["wearer_id"]: r["location_cell"] for r in second_rows.to_pylist()}
    assert cells[other.pseudonym("wearer", WEARERS["alice"])] == "u09t"
    assert cells[other.pseudonym("wearer", WEARERS["bob"])] == "u33d"
    assert cells[other.pseudonym("wearer", WEARERS["carol"])] is None
    record = json.loads((second / "audit" / "record.json").read_text())
    assert record["key_id"] == other.key_id and record["consent_checked"] is False
    assert _leaks(second, result.stderr, [secret.encode()]) == []


def test_run_erase_run_brings_nothing_back(first_run, inputs, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first_run[0], out)
    key = inputs["key"]
    alice = key.pseudonym("wearer", WEARERS["alice"])
    before = _rows(out)
    others = sorted((r["clip_id"], r["embedding"]) for r in before.to_pylist()
                    if r["wearer_id"] != alice)
    alice_clips = [r["clip_id"] for r in before.to_pylist() if r["wearer_id"] == alice]
    assert alice_clips and others

    erased = egoveil("erase", str(out), "--wearer", WEARERS["alice"], "--key-file",
                     inputs["key_file"])
    assert erased.returncode == 0, erased.stderr
    assert "1 rows removed" in erased.stderr
    after = _rows(out)
    assert alice not in after.column("wearer_id").to_pylist()
    assert sorted((r["clip_id"], r["embedding"]) for r in after.to_pylist()) == others
    assert not any((out / "clips" / f"{c}.mp4").exists() for c in alice_clips)
    events = [json.loads(line) for line in
              (out / "audit" / "events.jsonl").read_text().splitlines()]
    erasures = [e for e in events if e["kind"] == "erasure"]
    assert len(erasures) == 1 and erasures[0]["counts"]["rows_removed"] == 1
    assert egoveil("audit", "verify", str(out)).returncode == 0

    rerun = _run(inputs, out, "--consent", inputs["consent"], "--clips")
    assert "1 recordings skipped without decoding them (erased" in rerun.stderr
    rows = _rows(out)
    assert alice not in rows.column("wearer_id").to_pylist()
    assert sorted((r["clip_id"], r["embedding"]) for r in rows.to_pylist()) == others
    assert not any((out / "clips" / f"{c}.mp4").exists() for c in alice_clips)
    totals = json.loads((out / "manifest.json").read_text())["totals"]
    assert totals["recordings_erased_skipped"] == 1
    # The run appended to the same hash-chained log: the erasure stays on record.
    events = [json.loads(line) for line in
              (out / "audit" / "events.jsonl").read_text().splitlines()]
    assert [e for e in events if e["kind"] == "erasure"] == erasures
    assert [e["kind"] for e in events].count("erasure_excluded") == 1
    verified = egoveil("audit", "verify", str(out))
    assert verified.returncode == 0, verified.stderr
    assert _leaks(out, erased.stderr + rerun.stderr, [inputs["secret"]]) == []

    # A run with another key would not recognise the tombstones: refused, one line.
    other = tmp_path / "other.key"
    PseudonymKey.create_file(str(other))
    refused = egoveil("run", "--manifest", inputs["manifest"], "--output", str(out),
                      "--key-file", str(other), "--encoder", inputs["encoder"])
    assert refused.returncode == 2 and "erasure tombstones made with key id" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_erase_a_recording_named_by_its_file(first_run, inputs, tmp_path):
    from pipeline.erase import erase

    out = tmp_path / "out"
    shutil.copytree(first_run[0], out)
    bob_recording = inputs["key"].pseudonym("recording", _sha256(inputs["paths"]["bob"]))
    assert bob_recording in _rows(out).column("recording_id").to_pylist()
    summary = erase(str(out), [], [str(inputs["paths"]["bob"])], inputs["key_file"])
    assert summary.rows_removed == 1 and summary.clips_deleted == 1
    assert bob_recording not in _rows(out).column("recording_id").to_pylist()


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("source, extension, via_cli", [
    ("alice", ".mp4", True), ("bob", ".mov", True), ("alice", ".mkv", False),
    ("bob", ".avi", False),
])
def test_redact_writes_pixels_only(inputs, tmp_path, source, extension, via_cli):
    out_dir = tmp_path / "redacted"
    out_dir.mkdir()
    dest = out_dir / f"clip{extension}"
    console = ""
    if via_cli:
        result = egoveil("redact", str(inputs["paths"][source]), str(dest))
        assert result.returncode == 0, result.stderr
        console = result.stderr + result.stdout
    else:
        redact_file(str(inputs["paths"][source]), str(dest))
    assert pyav_findings(str(dest)) == []
    assert ffprobe_findings(str(dest)) == []
    assert exiftool_findings(str(dest)) == []
    assert _leaks(out_dir, console) == []


def test_redact_drops_xmp_that_exiftool_wrote(inputs, tmp_path):
    """XMP (uuid box) written by exiftool into the input does not reach the output."""
    if shutil.which("exiftool") is None:
        pytest.skip("exiftool not installed (Debian package libimage-exiftool-perl)")
    source = tmp_path / "with-xmp.mp4"
    shutil.copy(inputs["paths"]["carol"], source)
    marks = [b"Alice Example XMP", b"alice-xmp@example.org"]
    subprocess.run(["exiftool", "-q", "-overwrite_original",
                    f"-XMP-dc:Creator={marks[0].decode()}", f"-XMP-dc:Rights={marks[1].decode()}",
                    "-XMP-exif:GPSLatitude=48.8584", "-XMP-exif:GPSLongitude=2.2945",
                    str(source)], check=True)
    assert raw_strings_in(source.read_bytes(), marks) == marks
    out_dir = tmp_path / "redacted"
    out_dir.mkdir()
    redact_file(str(source), str(out_dir / "clip.mp4"))
    assert exiftool_findings(str(out_dir / "clip.mp4")) == []
    assert _leaks(out_dir, "", marks) == []


def test_redact_image_drops_exif(tmp_path):
    """EXIF GPS, make, model, serial and dates of a photo do not reach the redacted image."""
    from PIL import Image
    from skimage import data

    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "EgoGlassesCo", "EG-1 Prototype", "EgoCam 1.2"
    exif[0x0132] = "2026:05:01 10:00:00"
    exif[0xA431] = "EG1-SN-0042-7731"  # BodySerialNumber
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 30.24), 3: "E", 4: (2.0, 17.0, 40.2)}
    source = tmp_path / "photo.jpg"
    Image.fromarray(data.astronaut()).save(source, exif=exif)
    marks = [b"EgoGlassesCo", b"EG-1 Prototype", b"EgoCam 1.2", b"2026:05:01 10:00:00",
             b"EG1-SN-0042-7731"]
    assert raw_strings_in(source.read_bytes(), marks) == marks
    out_dir = tmp_path / "redacted"
    out_dir.mkdir()
    for extension in (".jpg", ".png"):
        redact_file(str(source), str(out_dir / f"photo{extension}"))
        with Image.open(out_dir / f"photo{extension}") as image:
            assert not image.getexif() and not image.info.get("xmp")
    assert _leaks(out_dir, "", marks) == []


def test_exports_carry_no_identifier_and_follow_an_erasure(first_run, inputs, tmp_path):
    """Export both formats, erase a wearer, sync: no byte of her rows is left anywhere."""
    out = tmp_path / "out"
    shutil.copytree(first_run[0], out)
    exports = {"webdataset": tmp_path / "export-wds", "hf": tmp_path / "export-hf"}
    console = ""
    for fmt, dest in exports.items():
        result = egoveil("export", str(out), "--to", fmt, str(dest), "--keep-pseudonyms",
                         "--key-file", inputs["key_file"])
        assert result.returncode == 0, result.stderr
        console += result.stderr + result.stdout
    secrets = [inputs["secret"], inputs["key_file"].encode(), str(tmp_path).encode(),
               str(inputs["root"]).encode()]
    for dest in exports.values():
        assert _leaks(dest, console, secrets) == []

    key = inputs["key"]
    alice = key.pseudonym("wearer", WEARERS["alice"])
    rows = [r for r in _rows(out).to_pylist() if r["wearer_id"] == alice]
    assert rows
    marks = [r["clip_id"].encode() for r in rows] + [r["embedding"] for r in rows] \
        + [r["recording_id"].encode() for r in rows] + [alice.encode()] \
        + [(out / "clips" / f"{r['clip_id']}.mp4").read_bytes() for r in rows]

    def found(dest) -> list[bytes]:
        data = [p.read_bytes() for p in dest.rglob("*") if p.is_file()]
        return [m for m in marks if any(m in d for d in data)]

    assert all(found(dest) == marks for dest in exports.values())
    erased = egoveil("erase", str(out), "--wearer", WEARERS["alice"], "--key-file",
                     inputs["key_file"])
    assert erased.returncode == 0, erased.stderr
    report = egoveil("audit", "report", str(out))
    assert report.stdout.count("OUT OF SYNC") == 2, report.stdout
    for dest in exports.values():
        synced = egoveil("export", str(out), "--sync", str(dest), "--key-file",
                         inputs["key_file"])
        assert synced.returncode == 0, synced.stderr
        assert "1 rows removed" in synced.stderr and "1 erasures applied" in synced.stderr
        assert found(dest) == [], dest.name
        assert _leaks(dest, synced.stderr, secrets) == []
    assert egoveil("audit", "verify", str(out)).returncode == 0
    report = egoveil("audit", "report", str(out))
    assert report.stdout.count(": in sync") == 2 and "OUT OF SYNC" not in report.stdout
