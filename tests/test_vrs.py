"""Project Aria VRS: the stream allow-list, orientation, the optional extra, a real recording."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.pvalue import TaggedOutput

from privacy.aria_streams import select_streams
from schemas.sidecar import RecordingRequest
from tests.cli import egoveil
from tests.conftest import shared_media
from transforms.admit import AdmitRecordingFn
from transforms.media.inputs import DecodeCaps
from transforms.media.vrs import INSTALL_HINT, aria_available, upright_turns

# The streams of a Gen 2 recording, as projectaria-tools lists them.
GEN2_STREAMS = ["211-1", "211-2", "214-1", "231-1", "246-1", "247-1", "248-1", "281-1", "281-2",
                "282-1", "283-1", "371-1", "371-2", "371-3", "373-1", "500-1", "1201-1",
                "1201-2", "1201-3", "1201-4", "1202-1", "1202-2", "1203-1"]
IMAGE_STREAMS = {"211-1", "211-2", "214-1", "1201-1", "1201-2", "1201-3", "1201-4"}


def test_allow_list_reads_the_rgb_and_slam_cameras_only():
    selection = select_streams([(s, s in IMAGE_STREAMS) for s in GEN2_STREAMS])
    assert [(g.name, g.streams, g.views) for g in selection.groups] == [
        ("rgb", ("214-1",), ("rgb",)),
        ("slam", ("1201-1", "1201-2", "1201-3", "1201-4"),
         ("left", "right", "side-left", "side-right"))]
    dropped = dict(selection.dropped)
    assert dropped["211-1"] == dropped["211-2"] == "eye-tracking camera"
    assert (dropped["231-1"], dropped["373-1"], dropped["248-1"]) == (
        "microphone", "eye gaze", "PPG (heart rate)")
    assert {dropped[s] for s in ("281-1", "282-1", "283-1")} == {"GPS", "Wi-Fi scan",
                                                                 "Bluetooth scan"}
    assert len(selection.read) + len(selection.dropped) == len(GEN2_STREAMS)
    # An allowed id that is not an image stream, or an unknown camera, is not read either.
    odd = select_streams([("214-1", False), ("1201-9", True), ("999-1", True)])
    assert odd.groups == () and dict(odd.dropped) == {"214-1": "other", "1201-9": "other",
                                                      "999-1": "other"}


def test_upright_turns_follow_the_camera_roll():
    up = np.array([0.0, -1.0, 0.0])  # the wearer's up in a device frame whose y points down
    assert upright_turns(np.eye(3), up) == 0
    # A camera rolled a quarter turn about its optical axis (Gen 1's sideways RGB camera):
    # its image's up points to the image's right or left, and a quarter turn fixes it.
    roll = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    turns = upright_turns(roll, up)
    assert turns in (1, 3) and upright_turns(roll.T, up) == (4 - turns) % 4
    assert upright_turns(np.diag([-1.0, -1.0, 1.0]), up) == 2
    # Check the convention on pixels: an arrow pointing to the wearer's up ends up on top.
    image = np.zeros((4, 4), np.uint8)
    image[1:3, 3] = 1  # content on the right edge: "up" points right in this image
    r_right = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    fixed = np.rot90(image, k=upright_turns(r_right, up))
    assert fixed[0, 1:3].all()


def test_a_vrs_input_without_the_extra_gets_a_dead_letter_naming_it(tmp_path, key_file,
                                                                   monkeypatch):
    fake = tmp_path / "walk.vrs"
    fake.write_bytes(b"VisionRecordFile" + os.urandom(512))
    monkeypatch.setitem(sys.modules, "projectaria_tools", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "projectaria_tools.core", None)
    fn = AdmitRecordingFn(key_file, None, "world-model-training", DecodeCaps())
    fn.setup()
    out = list(fn.process(RecordingRequest(str(fake), wearer_id="w")))
    assert len(out) == 1 and isinstance(out[0], TaggedOutput) and out[0].tag == "deadletter"
    letter = out[0].value
    assert (letter.reason, letter.detail) == ("unsupported", INSTALL_HINT)
    assert "egoveil[aria]" in letter.detail and str(tmp_path) not in json.dumps(letter.to_dict())


@pytest.fixture(scope="module")
def aria_run(tmp_path_factory, key_file, tiny_encoder):
    vrs = shared_media("aria", "multi_stream.vrs")
    if not aria_available():
        pytest.skip("projectaria-tools is not installed (pip install 'egoveil[aria]')")
    out = tmp_path_factory.mktemp("aria") / "out"
    result = egoveil("run", "--input", vrs, "--output", str(out), "--key-file", key_file,
                     "--encoder", tiny_encoder, "--clips", "--no-progress", "--verifier", "none")
    assert result.returncode == 0, result.stderr
    return vrs, out, result


def test_real_recording_reads_the_cameras_and_nothing_else(aria_run):
    vrs, out, result = aria_run
    table = pq.read_table(next((out / "latents").glob("*.parquet")))
    views = table.column("view").to_pylist()
    assert sorted(views) == ["left", "rgb", "right", "side-left", "side-right"]
    pairs = dict(zip(views, table.column("pair_id").to_pylist()))
    assert pairs["left"] == pairs["right"] and pairs["left"]
    assert pairs["rgb"] is None and pairs["side-left"] is None
    events = [json.loads(line) for line in (out / "audit" / "events.jsonl").read_text()
              .splitlines()]
    (streams,) = [e["counts"] for e in events if e["kind"] == "vrs_streams"]
    assert set(streams["streams_read"]) == {"214-1", "1201-1", "1201-2", "1201-3", "1201-4"}
    assert {"211-1", "211-2", "231-1", "248-1", "281-2", "373-1"} <= set(
        streams["streams_dropped"])
    # The closing note says what was read, what was dropped and what came out.
    assert "read 5: 214-1 (rgb), 1201-1 (left), 1201-2 (right)" in result.stderr and "eye-tracking camera: 211-1, 211-2" \
        in result.stderr and "rows by view: left 1, rgb 1, right 1" in result.stderr
    # Nothing the native library prints (it names the file) reaches the console.
    assert vrs not in result.stderr and os.path.basename(vrs) not in result.stderr
    assert "Traceback" not in result.stderr


def test_real_recording_outputs_hold_no_serial_session_or_path(aria_run):
    from projectaria_tools.core import data_provider

    vrs, out, _ = aria_run
    provider = data_provider.create_vrs_data_provider(vrs)
    tags = provider.get_file_tags()  # the test reads them to look for them; egoveil never does
    secrets = [tags[k].encode() for k in ("device_serial", "session_id") if tags.get(k)]
    secrets += [vrs.encode(), os.path.basename(vrs).encode()]
    assert len(secrets) >= 3
    for root, _, files in os.walk(out):
        for name in files:
            data = open(os.path.join(root, name), "rb").read()
            assert not any(s in data for s in secrets), name


def test_a_rerun_reuses_each_camera_groups_segments(aria_run, key_file, tiny_encoder):
    # The RGB camera and the SLAM cameras are two recordings of one file sharing a
    # pseudonym: each must get its own rows back from the cache, not the other's.
    vrs, out, _ = aria_run
    before = json.loads((out / "manifest.json").read_text())
    result = egoveil("run", "--input", vrs, "--output", str(out), "--key-file", key_file,
                     "--encoder", tiny_encoder, "--clips", "--no-progress", "--verifier", "none")
    assert result.returncode == 0, result.stderr
    after = json.loads((out / "manifest.json").read_text())
    assert "2 segments reused" in result.stderr
    assert after["content_sha256"] == before["content_sha256"]
    table = pq.read_table(next((out / "latents").glob("*.parquet")))
    assert sorted(table.column("view").to_pylist()) == ["left", "rgb", "right", "side-left",
                                                        "side-right"]
