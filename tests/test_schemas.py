"""Schemas: the latent shard layout and the manifest's allow-list."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from schemas.latents import embedding_array, latent_schema, shard_metadata
from schemas.records import DeadLetter
from schemas.sidecar import SidecarError, parse_manifest_line


def test_embedding_column_round_trips_without_row_copies():
    dim = 8
    values = np.arange(3 * dim, dtype="<f2").reshape(3, dim)
    column = pa.array([row.tobytes() for row in values], pa.binary(dim * 2))
    assert np.array_equal(embedding_array(column, dim), values)
    sliced = embedding_array(column.slice(1), dim)
    assert np.array_equal(sliced, values[1:])


def test_schema_metadata_records_versions():
    schema = latent_schema(16, {"encoder": {"encoder_id": "x"}})
    meta = shard_metadata(schema)
    assert meta["schema_version"] and meta["embedding_dim"] == 16
    assert meta["embedding_dtype"] == "float16" and meta["encoder"]["encoder_id"] == "x"
    with pytest.raises(ValueError):
        latent_schema(0)


def test_manifest_keeps_the_allow_list_only():
    req = parse_manifest_line(json.dumps({
        "uri": "a.mp4", "wearer_id": "w", "device_serial": "SN1",
        "capture_start": "2026-05-01T10:00:00Z", "location": {"lat": 1, "lon": 2},
        "pair_uri": "b.mp4", "gps_trace": [1, 2, 3], "owner_email": "x@y"}))
    assert req.uri == "a.mp4" and req.wearer_id == "w" and req.device_serial == "SN1"
    assert req.capture_start.isoformat() == "2026-05-01T10:00:00+00:00"
    assert req.location == (1.0, 2.0) and req.stereo == "none" and req.pair_uri == "b.mp4"
    assert not hasattr(req, "gps_trace")


@pytest.mark.parametrize("line, message", [
    ("[1, 2]", "JSON object"), ("{", "not valid JSON"), ('{"wearer_id": "w"}', "'uri'"),
    ('{"uri": ""}', "'uri'"), ('{"uri": "a", "capture_start": "yesterday"}', "ISO 8601"),
    ('{"uri": "a", "location": {"lat": 100, "lon": 0}}', "out of range"),
    ('{"uri": "a", "stereo": "3d"}', "'stereo'"), ('{"uri": "a", "wearer_id": 5}', "wearer_id"),
    ('{"uri": "a", "stereo": "sbs", "pair_uri": "b"}', "'pair_uri'"),
])
def test_bad_manifest_lines_name_the_field_not_the_value(line, message):
    with pytest.raises(SidecarError, match=message) as exc:
        parse_manifest_line(line)
    assert "yesterday" not in str(exc.value)


def test_dead_letter_reasons_are_a_closed_vocabulary():
    with pytest.raises(ValueError):
        DeadLetter(input_id="x", stage="admit", reason="oops")
