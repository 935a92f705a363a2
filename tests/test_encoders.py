"""Encoders: resolving ``--encoder``, preprocessing like the model's processor, loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transforms.models.encoders import (
    EncoderUnavailable,
    geometry_from_processor,
    resolve_encoder,
)
from transforms.models.runtime import LoadedEncoder


def test_geometry_matches_the_transformers_image_processor():
    """Resize + centre crop + normalize, as DINOv2's processor (PIL path) does it."""
    from transformers import BitImageProcessorPil

    processor = BitImageProcessorPil(size={"shortest_edge": 256},
                                     crop_size={"height": 224, "width": 224},
                                     image_mean=[0.485, 0.456, 0.406],
                                     image_std=[0.229, 0.224, 0.225], resample=3)
    geometry = geometry_from_processor(processor.to_dict(), 224)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
    ours = geometry.apply(image).astype(np.float32) * geometry.rescale
    ours = (ours - np.array(geometry.mean)) / np.array(geometry.std)
    theirs = processor(image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    assert ours.shape == theirs.shape == (224, 224, 3)
    assert np.abs(ours - theirs).max() < 0.02


def test_vjepa2_geometry_derives_resize_from_crop():
    geometry = geometry_from_processor({"video_processor_type": "VJEPA2VideoProcessor",
                                        "crop_size": {"height": 256, "width": 256}}, 256)
    assert geometry.shortest_edge == int(256 * 256 / 224) and geometry.crop == (256, 256)
    out = geometry.apply(np.zeros((1080, 1920, 3), np.uint8))
    assert out.shape == (256, 256, 3)


def test_resolve_a_saved_encoder(saved_encoder):
    spec = resolve_encoder(saved_encoder)
    assert spec.kind == "video" and spec.pretrained and spec.model_type == "vjepa2"
    assert spec.frames_per_clip == 8 and spec.embedding_dim == 96
    assert spec.encoder_id.startswith("local:vjepa2:") and saved_encoder not in spec.encoder_id
    assert spec.weights_sha256 and len(spec.weights_sha256) == 64


def test_resolve_refuses_what_cannot_load(tmp_path, tiny_encoder):
    with pytest.raises(EncoderUnavailable, match="does not exist"):
        resolve_encoder(str(tmp_path / "missing" / "model"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vjepa2"}))
    with pytest.raises(EncoderUnavailable, match="no weights"):
        resolve_encoder(str(tmp_path))
    with pytest.raises(EncoderUnavailable, match="unknown random encoder"):
        resolve_encoder("random:huge")
    with pytest.raises(EncoderUnavailable, match="tubelet"):
        resolve_encoder(tiny_encoder, frames_per_clip=5)


def test_offline_hub_id_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    with pytest.raises(EncoderUnavailable, match="--encoder DIR"):
        resolve_encoder("facebook/not-a-cached-model")


def test_loaded_encoder_is_deterministic_on_cpu(tiny_encoder):
    spec = resolve_encoder(tiny_encoder)
    h, w = spec.geometry.output_hw
    clips = np.random.default_rng(0).integers(0, 255, (2, spec.frames_per_clip, h, w, 3),
                                              dtype=np.uint8)
    a = LoadedEncoder(spec, "cpu").embed(clips)
    b = LoadedEncoder(spec, "cpu").embed(clips)
    assert a.shape == (2, spec.embedding_dim) and np.allclose(a, b)
    assert not np.allclose(a[0], a[1])


def test_a_make_encoder_folder_is_recorded_as_not_pretrained(tiny_encoder, saved_encoder):
    """`egoveil make-encoder` saves random weights; runs with its folder say so."""
    made = resolve_encoder(tiny_encoder)
    assert made.pretrained is False and made.describe()["pretrained"] is False
    assert resolve_encoder(saved_encoder).pretrained is True
    assert made.weights_sha256 == resolve_encoder(saved_encoder).weights_sha256
