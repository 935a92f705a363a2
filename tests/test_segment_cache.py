"""The finished-segment cache trusts only what this key wrote for this configuration."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from privacy.pseudonyms import PseudonymKey
from schemas.elements import LatentRow, Recording, Segment, VideoInfo
from schemas.latents import LatentLayout
from schemas.records import AuditEvent
from transforms.stores.segment_cache import CacheEntryRejected, SegmentCache

LAYOUT = LatentLayout(embedding_dim=4)
CONFIG = "c" * 64


def _segment(key: PseudonymKey, index: int = 0) -> Segment:
    recording = Recording(
        uri="/raw/walk.mp4", content_sha256="a" * 64,
        recording_id=key.pseudonym("recording", "a" * 64),
        wearer_id=key.pseudonym("wearer", "alice"), device_id=None,
        video=VideoInfo(width=64, height=64, fps=10.0, duration_s=2.0, frame_count=20,
                        rotation=0, codec="h264", has_audio=False))
    return Segment(recording=recording, index=index, start_s=float(index),
                   end_s=float(index + 1))


def _row(segment: Segment, clip: int) -> LatentRow:
    rec = segment.recording
    return LatentRow(
        clip_id=f"{segment.index:016x}{clip:016x}", recording_id=rec.recording_id,
        wearer_id=rec.wearer_id, view="rgb", segment_index=segment.index, clip_index=clip,
        start_s=float(clip), end_s=float(clip + 1), frame_count=8, fps=10.0,
        encoder_id="random:test", encoder_pretrained=False,
        embedding=np.arange(1, 5, dtype="<f2").tobytes(), faces_redacted=1,
        qa_status="verified")


def _remember(cache: SegmentCache, segment: Segment) -> list[LatentRow]:
    rows = [_row(segment, c) for c in range(2)]
    cache.mark_done(segment, [r.clip_id for r in rows],
                    [AuditEvent(kind="segment_anonymized", recording_id=rows[0].recording_id,
                                segment_index=segment.index, counts={"frames_emitted": 8})], [])
    for row in rows:
        cache.put_row(row)
    return rows


def test_rows_come_back_only_while_their_mac_holds(tmp_path, key_file, key):
    cache = SegmentCache(str(tmp_path), CONFIG, LAYOUT, key_file)
    segment = _segment(key)
    rows = _remember(cache, segment)
    found = cache.get(segment, with_files=False)
    assert [r.clip_id for r in found["rows"]] == sorted(r.clip_id for r in rows)
    assert found["events"][0].kind == "segment_anonymized"
    # The key never travels with the cache into the graph.
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._mac is None and clone.get(segment, with_files=False) is not None

    arrow = next(tmp_path.rglob("*.arrow"))
    data = arrow.read_bytes()
    at = data.rindex(np.arange(1, 5, dtype="<f2").tobytes())
    arrow.write_bytes(data[:at] + bytes(8) + data[at + 8:])  # the embedding zeroed
    with pytest.raises(CacheEntryRejected, match="MAC does not hold"):
        cache.get(segment, with_files=False)
    arrow.write_bytes(data)
    assert cache.get(segment, with_files=False) is not None
    done = next(tmp_path.rglob("done-*.json"))
    for forged in (b"\xff" * 200, done.read_bytes().split(b"\n", 2)[2]):  # garbage; no MAC
        done.write_bytes(forged)
        with pytest.raises(CacheEntryRejected):
            cache.get(segment, with_files=False)


def test_an_entry_is_bound_to_its_key_configuration_and_place(tmp_path, key_file, key):
    segment, other = _segment(key, 0), _segment(key, 1)
    _remember(SegmentCache(str(tmp_path), CONFIG, LAYOUT, key_file), segment)
    another_key = tmp_path / "another.key"
    PseudonymKey.create_file(str(another_key))
    with pytest.raises(CacheEntryRejected):
        SegmentCache(str(tmp_path), CONFIG, LAYOUT, str(another_key)).get(segment, False)

    cache = SegmentCache(str(tmp_path), CONFIG, LAYOUT, key_file)
    # A genuine entry copied under another segment's name is not that segment's.
    source = next(tmp_path.rglob("done-*.json")).parent
    target = source.parent / cache._dir(other.recording.recording_id, 1).rsplit("/", 1)[-1]
    shutil.copytree(source, target)
    with pytest.raises(CacheEntryRejected):
        cache.get(other, with_files=False)
    # Nor is a row file copied under another clip's name.
    (source / f"{_row(segment, 1).clip_id}.arrow").write_bytes(
        (source / f"{_row(segment, 0).clip_id}.arrow").read_bytes())
    with pytest.raises(CacheEntryRejected):
        cache.get(segment, with_files=False)
