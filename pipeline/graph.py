"""The Beam graph of ``egoveil run``: one labelled step per stage, wiring only."""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from privacy.config import AnonymizationConfig
from privacy.gates import DEFAULT_MAX_FAILURE_RATE
from privacy.metadata_policy import LocationPolicy
from privacy.tombstones import Tombstones
from schemas.latents import LatentLayout
from schemas.stages import PublishInputs
from transforms.admit import AdmitRecordingFn, AdmitRecordings
from transforms.anonymize import AnonymizeSegmentFn, AnonymizeSegments, ClipPlan
from transforms.discover import DiscoverRecordings, InputPattern
from transforms.embed import EmbedClips
from transforms.media.inputs import DecodeCaps
from transforms.models.encoders import EncoderSpec
from transforms.models.runtime import RuntimeConfig
from transforms.publish import Publish
from transforms.resume import RememberRowFn, ResumeSegmentFn, ResumeSegments
from transforms.segments import PlanSegments
from transforms.stores.progress import ProgressReporter
from transforms.stores.segment_cache import SegmentCache
from transforms.write_shards import WriteLatentShards


@dataclass(slots=True)
class GraphConfig:
    """Everything the graph needs, validated by the launcher (``pipeline.runner.prepare``)."""

    patterns: list[InputPattern]
    manifest: str | None
    output: str
    staging: str
    key_file: str | None
    consent_file: str | None
    purpose: str
    anonymization: AnonymizationConfig
    encoder: EncoderSpec
    frame_stride: int
    segment_seconds: float
    write_clips: bool
    batch_size: int
    target_shard_bytes: int
    caps: DecodeCaps
    config_fingerprint: str
    progress_dir: str | None
    record: dict
    tombstones: Tombstones | None = None
    location: LocationPolicy | None = None
    layout: LatentLayout | None = None  # None: float16 pooled embeddings only
    runtime: RuntimeConfig | None = None
    joint_pairs: bool = False
    max_failure_rate: float = DEFAULT_MAX_FAILURE_RATE
    use_cache: bool = True  # reuse and remember finished segments (transforms.stores.segment_cache)


def build_graph(p: beam.Pipeline, cfg: GraphConfig) -> None:
    progress = ProgressReporter(cfg.progress_dir)
    plan = ClipPlan(frames_per_clip=cfg.encoder.frames_per_clip, frame_stride=cfg.frame_stride,
                    geometry=cfg.encoder.geometry, write_clips=cfg.write_clips,
                    joint_pairs=cfg.joint_pairs)
    layout = cfg.layout or LatentLayout(embedding_dim=cfg.encoder.embedding_dim)
    cache = SegmentCache(cfg.output if cfg.use_cache else None, cfg.config_fingerprint, layout,
                         cfg.key_file)
    runtime = cfg.runtime or RuntimeConfig(batch_size=cfg.batch_size)

    found = p | "Discover" >> DiscoverRecordings(cfg.patterns, cfg.manifest, cfg.key_file)
    admitted = found.requests | "Admit" >> AdmitRecordings(AdmitRecordingFn(
        cfg.key_file, cfg.consent_file, cfg.purpose, cfg.caps, progress,
        tombstones=cfg.tombstones, location=cfg.location))
    segments = admitted.recordings | "Segment" >> PlanSegments(
        plan.span, cfg.segment_seconds, progress)
    resumed = segments | "Resume" >> ResumeSegments(
        ResumeSegmentFn(cache, cfg.write_clips, progress))
    anonymized = resumed.todo | "Anonymize" >> AnonymizeSegments(AnonymizeSegmentFn(
        cfg.anonymization, plan, cfg.key_file, f"{cfg.output}/clips",
        cfg.config_fingerprint, progress, cache=cache))
    embedded = anonymized.clips | "Embed" >> EmbedClips(
        cfg.encoder, cfg.batch_size, layout=layout, runtime=runtime)
    remembered = embedded.rows | "Remember" >> beam.ParDo(RememberRowFn(cache))
    rows = (remembered, resumed.rows) | "AllRows" >> beam.Flatten()
    enc = cfg.encoder
    file_metadata = {"encoder": enc.describe(), "encoder_id": enc.encoder_id,
                     "encoder_revision": enc.revision, "encoder_pretrained": enc.pretrained,
                     "config_sha256": cfg.config_fingerprint,
                     "frames_per_clip": plan.frames_per_clip, "frame_stride": plan.frame_stride}
    shards = rows | "WriteShards" >> WriteLatentShards(
        cfg.staging, layout, file_metadata, cfg.target_shard_bytes)

    inputs = ((found.requests | "CountRequests" >> beam.combiners.Count.Globally(),
               found.deadletters | "CountBadLines" >> beam.combiners.Count.Globally())
              | "Inputs" >> beam.Flatten() | "SumInputs" >> beam.CombineGlobally(sum))
    _ = PublishInputs(
        shards=shards,
        clip_files=(anonymized.files, resumed.files) | "AllClipFiles" >> beam.Flatten(),
        deadletters=(found.deadletters, admitted.deadletters, anonymized.deadletters,
                     embedded.deadletters) | "DeadLetters" >> beam.Flatten(),
        events=(admitted.audit, anonymized.audit, resumed.audit) | "AuditEvents" >> beam.Flatten(),
        inputs=inputs,
    ) | "Publish" >> Publish(cfg.output, cfg.staging, cfg.record, cfg.max_failure_rate,
                             cfg.key_file)
