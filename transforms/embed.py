"""Embedding: anonymized clips to latent rows through Beam's RunInference.

``ClipEncoderHandler`` is a ``ModelHandler``: RunInference batches clips, loads
one model per worker process (one per GPU when ``share_model_across_processes``),
and keeps the inference metrics. The encoder only ever receives ``Clip`` elements,
which the anonymize stage builds from redacted frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, RunInference

from schemas.elements import Clip, LatentRow
from schemas.latents import EMBEDDING_DTYPE
from transforms.encoders import EncoderSpec, LoadedEncoder


class ClipEncoderHandler(ModelHandler[Clip, LatentRow, LoadedEncoder]):
    """Loads the encoder described by an ``EncoderSpec`` and embeds batches of clips.

    Args:
        spec: the resolved encoder.
        max_batch_size: clips per forward pass.
        device: ``cuda``, ``cpu`` or None for the GPU when there is one.
    """

    def __init__(self, spec: EncoderSpec, max_batch_size: int = 8,
                 device: str | None = None) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        super().__init__()
        self.spec = spec
        self.max_batch_size = max_batch_size
        self.device = device

    def load_model(self) -> LoadedEncoder:
        return LoadedEncoder(self.spec, self.device)

    def run_inference(self, batch: Sequence[Clip], model: LoadedEncoder,
                      inference_args: dict | None = None) -> Iterable[LatentRow]:
        frames = np.stack([clip.frames for clip in batch])
        embeddings = model.embed(frames).astype(EMBEDDING_DTYPE)
        if not np.isfinite(embeddings).all():
            raise ValueError("encoder produced non-finite embeddings")
        for clip, emb in zip(batch, embeddings):
            yield LatentRow(
                clip_id=clip.clip_id, recording_id=clip.recording_id, wearer_id=clip.wearer_id,
                view=clip.view, segment_index=clip.segment_index, clip_index=clip.clip_index,
                start_s=clip.start_s, end_s=clip.end_s, frame_count=clip.frame_count,
                fps=clip.fps, encoder_id=self.spec.encoder_id,
                encoder_pretrained=self.spec.pretrained,
                embedding=emb.astype("<f2").tobytes(), faces_redacted=clip.faces_redacted,
                qa_status=clip.qa_status, device_id=clip.device_id,
                location_cell=clip.location_cell, pair_id=clip.pair_id)

    def get_num_bytes(self, batch: Sequence[Clip]) -> int:
        return sum(clip.frames.nbytes for clip in batch)

    def get_metrics_namespace(self) -> str:
        return "egoveil_encoder"

    def batch_elements_kwargs(self) -> dict:
        return {"min_batch_size": 1, "max_batch_size": self.max_batch_size}

    def share_model_across_processes(self) -> bool:
        import torch

        return torch.cuda.is_available()


class EmbedClips(beam.PTransform):
    """Clips -> latent rows, batched through the encoder."""

    def __init__(self, spec: EncoderSpec, max_batch_size: int = 8) -> None:
        super().__init__()
        self._handler = ClipEncoderHandler(spec, max_batch_size)

    def expand(self, clips):
        return clips | "RunInference" >> RunInference(self._handler)
