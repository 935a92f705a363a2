"""A published output made of synthetic latent rows, for tests and benchmarks of readers.

What reads a published output (export, erasure, the trainer-side readers) needs
outputs of many sizes, faster than the video pipeline makes them. This module
publishes synthetic rows through the real parts: the shard writer
(``transforms.write_shards``), real anonymized-clip videos (``VideoWriter``), the
publish step with its data contract, the hash-chained audit log and the manifest,
on Beam's DirectRunner. The result verifies like a run's output. Rows are
deterministic for a given key and seed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from privacy.metadata_policy import OUTPUT_STREAMS
from privacy.pseudonyms import PseudonymKey
from schemas.elements import LatentRow
from schemas.latents import LatentLayout, numpy_dtype


@dataclass(slots=True, frozen=True)
class SyntheticSpec:
    """What to publish.

    Args:
        rows: latent rows.
        wearers: distinct wearers the rows are spread over (row i has wearer i % wearers);
            every ``no_wearer_every``-th row has no wearer id (0: none without).
        layout: the latent layout (embedding size, dtype, token grid).
        clips: write one anonymized clip per row (``clip_frames`` frames of ``clip_size``
            pixels); ``distinct_clips`` different videos are made and reused.
        views: the views rows cycle through.
        unverified_every: every n-th row is ``redacted_unverified`` (0: none).
        target_shard_mb: shard size, as ``egoveil run --target-shard-mb``.
    """

    rows: int = 24
    wearers: int = 4
    no_wearer_every: int = 0
    layout: LatentLayout = LatentLayout(embedding_dim=16)
    clips: bool = True
    clip_frames: int = 2
    clip_size: int = 32
    distinct_clips: int = 4
    views: tuple[str, ...] = ("rgb",)
    unverified_every: int = 0
    target_shard_mb: float = 256.0
    seed: int = 0


def synthetic_record(key_id: str, layout: LatentLayout, run_id: str = "0123456789abcdef") -> dict:
    """A record of processing shaped as ``pipeline.runner.prepare`` writes it."""
    return {
        "run_id": run_id, "purpose": "world-model-training", "consent_checked": True,
        "key_id": key_id, "config_sha256": "c" * 64,
        "started_at": "2026-05-01T10:00:00+00:00", "runner": "DirectRunner",
        "metadata": {"wearer_id": "keyed pseudonym", "device_serial": "keyed pseudonym",
                     "capture_start": "consent check only; outputs hold offsets",
                     "location": "dropped", "streams": OUTPUT_STREAMS},
        "anonymization": {"detector": "centerface:threshold=0.1", "temporal_window": 2,
                          "redaction": {"mode": "solid", "mask_scale": 1.4}},
        "detector": {"name": "centerface", "threshold": 0.1, "weights_sha256": "d" * 64,
                     "backend": "opencv"},
        "verification": {"enabled": True, "verifier": {"name": "dlib_hog", "upsample": 1},
                         "tolerance": 0.6, "every_n_frames": 50, "min_face_px": 20,
                         "face_encoder": {"name": "dlib_face_recognition_resnet_model_v1",
                                          "weights_sha256": "e" * 64}},
        "encoder": {"encoder_id": "random:synthetic", "pretrained": False,
                    "embedding_dim": layout.embedding_dim, "weights_sha256": None},
        "latents": layout.describe(),
    }


def _clip_videos(spec: SyntheticSpec, folder: str) -> list[tuple[bytes, int]]:
    from transforms.media.video import VideoWriter

    rng = np.random.default_rng(spec.seed)
    videos = []
    for number in range(spec.distinct_clips):
        path = os.path.join(folder, f"clip{number}.mp4")
        writer = VideoWriter(path, ".mp4", spec.clip_size, spec.clip_size, 10.0)
        for frame in range(spec.clip_frames):
            writer.write(rng.integers(0, 255, (spec.clip_size, spec.clip_size, 3), np.uint8),
                         frame / 10)
        writer.close()
        with open(path, "rb") as handle:
            videos.append((handle.read(), spec.clip_frames))
    return videos


def _latents(spec: SyntheticSpec, number: int) -> tuple[bytes, bytes | None]:
    """Row ``number``'s embedding and tokens, from a generator seeded by the row alone."""
    layout, dtype = spec.layout, numpy_dtype(spec.layout.dtype)
    rng = np.random.default_rng([spec.seed, number])
    embedding = rng.standard_normal(layout.embedding_dim, np.float32).astype(dtype).tobytes()
    tokens = None
    if layout.tokens_shape:
        tokens = rng.standard_normal(layout.tokens_shape, np.float32).astype(dtype).tobytes()
    return embedding, tokens


def _row_fields(spec: SyntheticSpec, key: PseudonymKey, number: int) -> dict:
    """Row ``number`` without its latents (pseudonyms need the key, which never travels)."""
    wearer_number = number % spec.wearers
    wearer = None if spec.no_wearer_every and number % spec.no_wearer_every == 0 \
        else f"wearer-{wearer_number}"
    unverified = spec.unverified_every and \
        number % spec.unverified_every == spec.unverified_every - 1
    return dict(
        clip_id=hashlib.sha256(f"{spec.seed}-clip-{number}".encode()).hexdigest()[:32],
        recording_id=key.pseudonym("recording", f"content-{wearer_number}-{number % 2}"),
        wearer_id=key.pseudonym("wearer", wearer) if wearer else None,
        view=spec.views[number % len(spec.views)], segment_index=number // 4,
        clip_index=number % 4, start_s=float(number), end_s=float(number) + 0.8,
        frame_count=8 + number % 8, fps=10.0, encoder_id="random:synthetic",
        encoder_pretrained=False, faces_redacted=number % 3,
        qa_status="redacted_unverified" if unverified else
        ("reredacted_verified" if number % 5 == 4 else "verified"),
        device_id=key.pseudonym("device", f"SN-{wearer_number}"))


def _with_latents(spec: SyntheticSpec, number: int, fields: dict) -> LatentRow:
    embedding, tokens = _latents(spec, number)
    return LatentRow(**fields, embedding=embedding, tokens=tokens)


def synthetic_rows(spec: SyntheticSpec, key: PseudonymKey) -> list[LatentRow]:
    """The rows ``publish_synthetic`` writes."""
    return [_with_latents(spec, i, _row_fields(spec, key, i)) for i in range(spec.rows)]


def publish_synthetic(out: str, key_file: str, spec: SyntheticSpec = SyntheticSpec()) -> str:
    """Publish ``spec``'s rows (and clips) into the new folder ``out``; returns ``out``.

    Args:
        out: a new folder.
        key_file: the pseudonym key (as ``egoveil keygen`` writes it): it makes the
            pseudonyms and signs the folder's audit seals.
        spec: what to publish.
    """
    from apache_beam.testing.test_pipeline import TestPipeline

    from schemas.stages import PublishedFile, PublishInputs
    from transforms.publish import Publish
    from transforms.stores.keys import load_key
    from transforms.write_shards import WriteLatentShards

    key = load_key(key_file)

    fields = [_row_fields(spec, key, i) for i in range(spec.rows)]
    staging = os.path.join(out, ".staging", "0123456789abcdef")
    clips = []
    if spec.clips:
        os.makedirs(os.path.join(out, "clips"), exist_ok=True)
        work = tempfile.mkdtemp(prefix="egoveil-synthetic-")
        try:
            videos = _clip_videos(spec, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for number, row in enumerate(fields):
            data, frames = videos[number % len(videos)]
            with open(os.path.join(out, "clips", f"{row['clip_id']}.mp4"), "wb") as handle:
                handle.write(data)
            clips.append(PublishedFile(path=f"clips/{row['clip_id']}.mp4", kind="clip",
                                       sha256=hashlib.sha256(data).hexdigest(),
                                       bytes=len(data), rows=frames))
    record = synthetic_record(key.key_id, spec.layout)
    with TestPipeline() as p:
        # Latents are made inside the pipeline: Create pickles (and bz2-compresses) what
        # it is given into the job graph, which for random latents takes minutes.
        shards = (p | "Rows" >> beam.Create(list(enumerate(fields)), reshuffle=False)
                  | "Latents" >> beam.MapTuple(lambda i, f: _with_latents(spec, i, f))
                  | WriteLatentShards(staging, spec.layout, {"encoder": record["encoder"]},
                                      target_shard_bytes=int(spec.target_shard_mb * 1024**2)))
        PublishInputs(shards=shards, clip_files=p | "Clips" >> beam.Create(clips),
                      deadletters=p | "Deadletters" >> beam.Create([]),
                      events=p | "Events" >> beam.Create([]),
                      inputs=p | "Inputs" >> beam.Create([spec.rows])) | Publish(
                          out, staging, record, key_file=key_file)
    return out
