"""Embedding: anonymized clips to latent rows through Beam's RunInference.

``ClipEncoderHandler`` is a ``ModelHandler``: RunInference batches clips, loads
one model per worker process and shares it among the process's threads (on a
GPU worker, run one SDK process per GPU, e.g. Dataflow's
``--experiments=no_use_multiple_sdk_containers``), and keeps the inference
metrics. The encoder only ever receives ``Clip`` elements, which the anonymize
stage builds from redacted frames.

A batch the encoder raises on becomes one ``embed_failed`` dead letter per clip
(Beam's RunInference exception handling); the other batches go on, and the
run's failure-rate gate counts the failed inputs.

Metrics (namespace ``egoveil``): ``clips_embed_failed``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from schemas.elements import Clip, LatentRow
from schemas.latents import LatentLayout
from schemas.records import DeadLetter
from schemas.stages import Embedded
from transforms.models.encoders import EncoderSpec
from transforms.models.runtime import LoadedEncoder, RuntimeConfig


def layout_for(spec: EncoderSpec, dtype: str = "float16", tokens: bool = False,
               token_grid: tuple[int, int, int] | None = None) -> LatentLayout:
    """The shard layout for an encoder's latents.

    Args:
        spec: the resolved encoder.
        dtype: storage dtype, ``float16`` or ``bfloat16``.
        tokens: store each clip's token grid.
        token_grid: average-pool the token grid to this (time, height, width); each
            size must divide the model's own grid. Implies ``tokens``.

    Raises:
        ValueError: the encoder has no token grid, or the grid does not divide it.
    """
    if not tokens and token_grid is None:
        return LatentLayout(embedding_dim=spec.embedding_dim, dtype=dtype)
    native = spec.token_grid
    if native is None or not spec.token_dim:
        raise ValueError(f"encoder {spec.encoder_id} has no token grid to store")
    grid = tuple(token_grid) if token_grid is not None else native
    if len(grid) != 3 or any(g < 1 or n % g for g, n in zip(grid, native)):
        raise ValueError(f"token grid {'x'.join(map(str, grid))} must divide the encoder's grid "
                         f"{'x'.join(map(str, native))} (time x height x width)")
    return LatentLayout(embedding_dim=spec.embedding_dim, dtype=dtype, token_grid=grid,
                        token_dim=spec.token_dim)


class ClipEncoderHandler(ModelHandler[Clip, LatentRow, LoadedEncoder]):
    """Loads the encoder described by an ``EncoderSpec`` and embeds batches of clips.

    Args:
        spec: the resolved encoder.
        max_batch_size: clips per forward pass (batches are filled up to it).
        device: ``cuda``, ``cpu`` or None for the runtime's choice.
        layout: what to store (dtype, token grid); float16 pooled embeddings by default.
        runtime: device, precision and compilation.
        share_across_processes: one model per machine, served to every SDK process
            through Beam's multi-process sharing; inputs then cross a process boundary,
            so one SDK process per GPU is the faster set-up for video.
    """

    def __init__(self, spec: EncoderSpec, max_batch_size: int = 8,
                 device: str | None = None, *, layout: LatentLayout | None = None,
                 runtime: RuntimeConfig | None = None,
                 share_across_processes: bool = False) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        super().__init__()
        self.spec = spec
        self.max_batch_size = max_batch_size
        self.runtime = runtime or RuntimeConfig(device=device or "auto",
                                                batch_size=max_batch_size)
        self.layout = layout or LatentLayout(embedding_dim=spec.embedding_dim)
        self._share = share_across_processes

    def load_model(self) -> LoadedEncoder:
        r = self.runtime
        return LoadedEncoder(self.spec, r.device, r.precision, r.compile, self.max_batch_size)

    def run_inference(self, batch: Sequence[Clip], model: LoadedEncoder,
                      inference_args: dict | None = None) -> Iterable[LatentRow]:
        layout = self.layout
        latents = model.encode(model.stage([clip.frames for clip in batch]),
                               token_grid=layout.token_grid, dtype=layout.dtype)
        for i, clip in enumerate(batch):
            yield LatentRow(
                clip_id=clip.clip_id, recording_id=clip.recording_id, wearer_id=clip.wearer_id,
                view=clip.view, segment_index=clip.segment_index, clip_index=clip.clip_index,
                start_s=clip.start_s, end_s=clip.end_s, frame_count=clip.frame_count,
                fps=clip.fps, encoder_id=self.spec.encoder_id,
                encoder_pretrained=self.spec.pretrained,
                embedding=latents.pooled[i].tobytes(), faces_redacted=clip.faces_redacted,
                qa_status=clip.qa_status, device_id=clip.device_id,
                location_cell=clip.location_cell, pair_id=clip.pair_id,
                tokens=latents.tokens[i].tobytes() if latents.tokens is not None else None)

    def get_num_bytes(self, batch: Sequence[Clip]) -> int:
        return sum(clip.frames.nbytes for clip in batch)

    def get_metrics_namespace(self) -> str:
        return "egoveil_encoder"

    def batch_elements_kwargs(self) -> dict:
        # Full batches keep a GPU busy; only a bundle's last batch is smaller.
        return {"min_batch_size": self.max_batch_size, "max_batch_size": self.max_batch_size}

    def share_model_across_processes(self) -> bool:
        return self._share


def failed_batch_deadletters(failed) -> list[DeadLetter]:
    """``embed_failed`` dead letters for a batch RunInference could not embed.

    Args:
        failed: ``(batch of Clip, (exception type, repr, traceback))`` as Beam's
            exception handling emits it. Only the exception's type name is kept: its
            message and traceback may quote paths.
    """
    batch, (exc_type, _, _) = failed
    name = getattr(exc_type, "__name__", "error")
    Metrics.counter("egoveil", "clips_embed_failed").inc(len(batch))
    return [DeadLetter(input_id=clip.input_id or clip.recording_id, stage="embed",
                       reason="embed_failed",
                       detail=f"the encoder failed on a batch of {len(batch)} clips ({name})",
                       recording_id=clip.recording_id, segment_index=clip.segment_index)
            for clip in batch]


class EmbedClips(beam.PTransform):
    """Clips -> ``Embedded(rows, deadletters)``, batched through the encoder.

    Args:
        spec: the resolved encoder.
        max_batch_size: clips per forward pass.
        layout: what to store (see ``layout_for``).
        runtime: device, precision and compilation.
    """

    def __init__(self, spec: EncoderSpec, max_batch_size: int = 8, *,
                 layout: LatentLayout | None = None,
                 runtime: RuntimeConfig | None = None) -> None:
        super().__init__()
        self._handler = ClipEncoderHandler(spec, max_batch_size, layout=layout, runtime=runtime)

    def expand(self, clips) -> Embedded:
        rows, failed = clips | "RunInference" >> RunInference(
            self._handler).with_exception_handling()
        deadletters = failed.failed_inferences | "EmbedFailed" >> beam.FlatMap(
            failed_batch_deadletters)
        return Embedded(rows=rows, deadletters=deadletters)
