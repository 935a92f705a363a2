"""Encoders on their device: image and video models, token grids, precisions, RunInference.

Tiny models are built with random weights and saved with ``save_pretrained`` by
the tests; the reference for each is the model's own transformers processor and
forward pass.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
import torch
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.elements import Clip
from transforms.embed import EmbedClips, layout_for
from transforms.models.encoders import resolve_encoder, save_random_encoder
from transforms.models.runtime import LoadedEncoder, RuntimeConfig


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random frames (real images are smooth; resampling noise stays small)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (n, max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR))
                     for f in small])


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory) -> str:
    return save_random_encoder(str(tmp_path_factory.mktemp("dinov2")), "dinov2-tiny")


@pytest.fixture(scope="module")
def siglip_dirs(tmp_path_factory) -> dict[str, str]:
    """A SigLIP vision tower and a SigLIP dual encoder, each with its image processor."""
    from transformers import (
        SiglipConfig,
        SiglipImageProcessorPil,
        SiglipModel,
        SiglipTextConfig,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, image_size=32, patch_size=8)
    processor = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    dirs = {}
    torch.manual_seed(0)
    for name, model in (
            ("vision", SiglipVisionModel(SiglipVisionConfig(**vision))),
            ("dual", SiglipModel(SiglipConfig(
                vision_config=vision,
                text_config=SiglipTextConfig(hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64,
                                             vocab_size=100).to_dict())))):
        path = str(tmp_path_factory.mktemp(f"siglip-{name}"))
        model.save_pretrained(path)
        processor.save_pretrained(path)
        dirs[name] = path
    return dirs


def _reference_pooled(source: str, image: np.ndarray) -> np.ndarray:
    """The model's own processor and forward pass, as a transformers user would run them."""
    from transformers import AutoImageProcessor, AutoModel

    processor = AutoImageProcessor.from_pretrained(source, backend="pil")
    model = AutoModel.from_pretrained(source).eval()
    pixels = processor(image, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        if hasattr(model, "get_image_features"):
            out = model.get_image_features(pixel_values=pixels)
            out = getattr(out, "pooler_output", out)
        else:
            out = model(pixel_values=pixels).pooler_output
    return out[0].numpy()


@pytest.mark.parametrize("which", ["dinov2", "siglip-vision", "siglip-dual"])
def test_image_encoders_match_their_own_processor_and_model(which, dinov2_dir, siglip_dirs):
    source = {"dinov2": dinov2_dir, "siglip-vision": siglip_dirs["vision"],
              "siglip-dual": siglip_dirs["dual"]}[which]
    spec = resolve_encoder(source)
    assert spec.kind == "image" and spec.frames_per_clip == 1
    image = _frames(1, 120, 160)[0]
    clip = spec.geometry.apply(image)[None, None]  # what the anonymize stage emits
    ours = LoadedEncoder(spec, "cpu").embed(clip)[0]
    theirs = _reference_pooled(source, image)
    assert ours.shape == theirs.shape == (spec.embedding_dim,)
    cosine = ours @ theirs / np.linalg.norm(ours) / np.linalg.norm(theirs)
    assert cosine > 0.999, cosine


def test_image_token_grid_drops_class_tokens_and_averages_frames(dinov2_dir):
    spec = resolve_encoder(dinov2_dir, frames_per_clip=2)
    assert spec.token_grid == (2, 4, 4) and spec.token_dim == 48
    h, w = spec.geometry.output_hw
    clips = _frames(6, h, w).reshape(3, 2, h, w, 3)
    encoder = LoadedEncoder(spec, "cpu")
    latents = encoder.encode(clips, token_grid=spec.token_grid)
    assert latents.tokens.shape == (3, 2, 4, 4, 48) and latents.tokens.dtype == np.float16
    per_frame = encoder.embed(clips.reshape(6, 1, h, w, 3)).reshape(3, 2, -1).mean(axis=1)
    assert np.allclose(latents.pooled.astype(np.float32), per_frame, atol=2e-3)


def test_video_token_grid_pools_to_a_coarser_grid(tiny_encoder):
    spec = resolve_encoder(tiny_encoder)
    assert spec.token_grid == (4, 4, 4)
    h, w = spec.geometry.output_hw
    clips = _frames(2 * spec.frames_per_clip, h, w).reshape(2, spec.frames_per_clip, h, w, 3)
    encoder = LoadedEncoder(spec, "cpu")
    full = encoder.encode(clips, token_grid=(4, 4, 4)).tokens.astype(np.float32)
    coarse = encoder.encode(clips, token_grid=(2, 2, 1), dtype="bfloat16").tokens
    assert coarse.shape == (2, 2, 2, 1, 96) and coarse.dtype.name == "bfloat16"
    expected = full.reshape(2, 2, 2, 2, 2, 1, 4, 96).mean(axis=(2, 4, 6))
    assert np.allclose(coarse.astype(np.float32), expected, atol=0.05, rtol=0.02)
    # The pooled embedding is the mean of the grid.
    pooled = encoder.embed(clips)
    assert np.allclose(pooled, full.mean(axis=(1, 2, 3)), atol=2e-3)


def test_bf16_matches_fp32_to_bf16_tolerance(tiny_encoder):
    """The GPU runs bf16; the CPU fallback fp32. Same latents to bf16 tolerance."""
    spec = resolve_encoder(tiny_encoder)
    h, w = spec.geometry.output_hw
    clips = _frames(3 * spec.frames_per_clip, h, w, seed=3).reshape(
        3, spec.frames_per_clip, h, w, 3)
    fp32 = LoadedEncoder(spec, "cpu", precision="fp32").embed(clips)
    bf16 = LoadedEncoder(spec, "cpu", precision="bf16").embed(clips)
    cos = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cos.min() > 0.999, cos
    assert np.abs(fp32 - bf16).max() < 0.05 * np.abs(fp32).max()


def test_resolution_and_token_grid_options(tiny_encoder):
    spec = resolve_encoder(tiny_encoder, resolution=96)
    assert spec.geometry.output_hw == (96, 96) and spec.token_grid == (4, 6, 6)
    assert spec.geometry.apply(np.zeros((360, 640, 3), np.uint8)).shape == (96, 96, 3)
    h, w = spec.geometry.output_hw
    latents = LoadedEncoder(spec, "cpu").encode(
        np.zeros((1, spec.frames_per_clip, h, w, 3), np.uint8), token_grid=(2, 3, 3))
    assert latents.tokens.shape == (1, 2, 3, 3, 96)
    layout = layout_for(spec, "bfloat16", token_grid=(2, 3, 3))
    assert layout.tokens_shape == (2, 3, 3, 96) and layout.dtype == "bfloat16"
    with pytest.raises(ValueError, match="must divide"):
        layout_for(spec, token_grid=(3, 3, 3))
    from transforms.models.encoders import EncoderUnavailable

    with pytest.raises(EncoderUnavailable, match="patch size"):
        resolve_encoder(tiny_encoder, resolution=100)


def test_embed_clips_stores_token_grids_through_run_inference(dinov2_dir):
    spec = resolve_encoder(dinov2_dir)
    layout = layout_for(spec, "float16", tokens=True, token_grid=(1, 2, 2))
    h, w = spec.geometry.output_hw
    frames = _frames(5, h, w)
    clips = [Clip(clip_id=f"{i:032x}", recording_id="r" * 32, wearer_id=None, view="rgb",
                  segment_index=0, clip_index=i, start_s=float(i), end_s=i + 1.0,
                  frame_count=1, fps=10.0, frames=frames[i:i + 1], faces_redacted=0,
                  qa_status="redacted_unverified") for i in range(5)]
    with TestPipeline() as p:
        rows = (p | beam.Create(clips)
                | EmbedClips(spec, 2, layout=layout, runtime=RuntimeConfig(device="cpu"))).rows
        assert_that(rows | beam.Map(lambda r: (r.clip_index, len(r.embedding), len(r.tokens))),
                    equal_to([(i, 48 * 2, 2 * 2 * 48 * 2) for i in range(5)]))


@pytest.mark.slow
def test_compiled_encoder_matches_eager(tiny_encoder):
    """torch.compile (inductor, needs a C compiler) pads batches to one shape."""
    spec = resolve_encoder(tiny_encoder)
    h, w = spec.geometry.output_hw
    clips = _frames(3 * spec.frames_per_clip, h, w).reshape(3, spec.frames_per_clip, h, w, 3)
    eager = LoadedEncoder(spec, "cpu").embed(clips)
    compiled = LoadedEncoder(spec, "cpu", compile=True, batch_size=4).embed(clips)
    assert compiled.shape == eager.shape and np.allclose(compiled, eager, atol=1e-3)
