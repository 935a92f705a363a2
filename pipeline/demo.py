"""``egoveil demo DIR``: make sample recordings and run the whole pipeline on them, offline.

Writes ``DIR/inputs`` (three recordings with faces, audio, identifying metadata,
subtitle, telemetry and timecode tracks and chapters, a manifest, a consent
registry in which one wearer has withdrawn, and a throw-away pseudonym key) and
``DIR/output`` (the run's shards, clips, audit record and dead letters).
"""

from __future__ import annotations

import json
import logging
import os

from pipeline.samples import FaceTrack, make_recording
from privacy.pseudonyms import PseudonymKey
from transforms.models.encoders import DEFAULT_ENCODER, EncoderUnavailable, resolve_encoder

log = logging.getLogger("egoveil")

DEMO_FALLBACK_ENCODER = "random:vjepa2-small"

_RECORDINGS = [
    # (file, wearer, consent row, tracks)
    ("walk_alice.mp4", "wearer-alice", ("world-model-training", "2026-01-01T00:00:00Z", ""),
     None),
    ("kitchen_bob.mov", "wearer-bob", ("world-model-training", "2026-01-01T00:00:00Z", ""),
     (FaceTrack("camera", (0.3, 0.5), (0.7, 0.4), 120),)),
    ("street_carol.mp4", "wearer-carol",
     ("world-model-training", "2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z"), None),
]


def make_inputs(directory: str) -> dict:
    """Sample recordings, manifest, consent registry and a throw-away key under ``directory``."""
    os.makedirs(directory, exist_ok=True)
    manifest_lines, consent_rows = [], ["wearer_id,purpose,granted_at,withdrawn_at"]
    for seed, (name, wearer, grant, tracks) in enumerate(_RECORDINGS):
        make_recording(os.path.join(directory, name), seconds=4.0, tracks=tracks, seed=seed,
                       side_tracks=True)
        manifest_lines.append(json.dumps({
            "uri": name, "wearer_id": wearer, "device_serial": f"EG1-SN-{seed:04d}",
            "capture_start": "2026-05-01T10:00:00Z",
            "location": {"lat": 48.8584, "lon": 2.2945}, "stereo": "none",
            "firmware_notes": "dropped by the allow-list"}))
        consent_rows.append(",".join((wearer, *grant)))
    paths = {"manifest": os.path.join(directory, "manifest.jsonl"),
             "consent": os.path.join(directory, "consent.csv"),
             "key": os.path.join(directory, "demo.key")}
    with open(paths["manifest"], "w") as handle:
        handle.write("\n".join(manifest_lines) + "\n")
    with open(paths["consent"], "w") as handle:
        handle.write("\n".join(consent_rows) + "\n")
    PseudonymKey.create_file(paths["key"], overwrite=True)
    return paths


def choose_encoder() -> str:
    """The default encoder if it can be had (cached or reachable), else a small random one."""
    try:
        resolve_encoder(DEFAULT_ENCODER)
        return DEFAULT_ENCODER
    except EncoderUnavailable:
        log.warning("the default encoder %s cannot be had offline; the demo uses a small "
                    "randomly initialised V-JEPA 2 (%s) instead, and every shard row records "
                    "that it is not pretrained", DEFAULT_ENCODER, DEMO_FALLBACK_ENCODER)
        return DEMO_FALLBACK_ENCODER


def demo_argv(directory: str, encoder: str | None = None) -> list[str]:
    inputs = os.path.join(directory, "inputs")
    paths = make_inputs(inputs)
    log.info("made 3 sample recordings, a manifest, a consent registry and a throw-away "
             "pseudonym key (for this demo only) in %s", inputs)
    return ["--manifest", paths["manifest"], "--consent", paths["consent"],
            "--key-file", paths["key"], "--output", os.path.join(directory, "output"),
            "--encoder", encoder or choose_encoder(), "--clips"]
