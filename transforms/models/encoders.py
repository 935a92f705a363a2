"""Encoders: resolving ``--encoder`` on the launcher and shaping frames like its processor.

``--encoder`` takes a Hugging Face model id, a local directory saved with
``save_pretrained``, or ``random:<preset>`` for a randomly initialised model of a
known architecture (demos, tests and GPU timing; every shard row then says it is
not pretrained): ``vjepa2-tiny``, ``vjepa2-small``, ``vjepa2-vitl``, ``dinov2-tiny``,
``dinov2-vitb14``. Video encoders (V-JEPA 2) take clips of N frames; image encoders
(DINOv2, SigLIP, CLIP or any transformers vision model with a pooled output) take
each frame of a clip.

Preprocessing reproduces the model's own processor from its saved config (resize,
centre crop, rescale, normalize, with the processor's PIL resampling): the
transformers video processors need torchvision, which this project does not
install beside the pinned CPU torch. Frames are resized and cropped on the CPU
right after redaction, so only encoder-sized frames travel to the model; rescale
and normalize run on the model's device (``transforms.models.runtime``).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field, replace
from urllib.parse import urlparse

import numpy as np

DEFAULT_ENCODER = "facebook/vjepa2-vitl-fpc64-256"
RANDOM_PREFIX = "random:"
VIDEO_MODEL_TYPES = ("vjepa2", "videomae", "vivit", "timesformer")
PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")
# In the config.json of a folder `egoveil make-encoder` saved: its weights are random.
RANDOM_INIT_MARK = "egoveil_random_init"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_VJEPA2_SMALL_PREDICTOR = dict(pred_hidden_size=48, pred_num_hidden_layers=1,
                               pred_num_attention_heads=3, num_pooler_layers=1)
# Random-weight models, by preset: their transformers config. The large ones are the
# real architectures, for timing on GPUs (bench/gpu_embed.py) without downloading weights.
RANDOM_PRESETS = {
    "vjepa2-tiny": dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=3,
                        crop_size=64, frames_per_clip=8, **_VJEPA2_SMALL_PREDICTOR),
    "vjepa2-small": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                         crop_size=128, frames_per_clip=16,
                         **dict(_VJEPA2_SMALL_PREDICTOR, pred_hidden_size=96,
                                pred_num_hidden_layers=2)),
    # facebook/vjepa2-vitl-fpc64-256: ViT-L/16, tubelet 2, 256 px (transformers' defaults).
    "vjepa2-vitl": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                        crop_size=256, frames_per_clip=64, **_VJEPA2_SMALL_PREDICTOR),
    "dinov2-tiny": dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                        mlp_ratio=2, patch_size=14, image_size=56),
    # facebook/dinov2-base: ViT-B/14, fed 224 px crops by its processor.
    "dinov2-vitb14": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                          patch_size=14, image_size=518),
}
RANDOM_PRESET_TYPES = {name: name.split("-")[0] for name in RANDOM_PRESETS}

# The processor each random preset's real model ships with, for a given crop size.
_RANDOM_CROPS = {"vjepa2-tiny": 64, "vjepa2-small": 128, "vjepa2-vitl": 256,
                 "dinov2-tiny": 56, "dinov2-vitb14": 224}


class EncoderUnavailable(RuntimeError):
    """The encoder cannot be loaded; the message says what to do."""


@dataclass(slots=True, frozen=True)
class FrameGeometry:
    """How a frame becomes encoder input, read from the model's processor config.

    Attributes:
        shortest_edge: resize so the shorter side has this length (aspect kept), or
        size: resize to exactly (height, width) when the processor does so.
        crop: centre crop (height, width) after resizing, or None.
        resample: PIL resampling filter id used by the processor.
    """

    shortest_edge: int | None
    size: tuple[int, int] | None
    crop: tuple[int, int] | None
    resample: int
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def output_hw(self) -> tuple[int, int]:
        if self.crop:
            return self.crop
        if self.size:
            return self.size
        raise ValueError("geometry without crop or size has no fixed output size")

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Resize and crop an RGB uint8 frame to the encoder's input size (uint8)."""
        from PIL import Image

        pil = Image.fromarray(image)
        w, h = pil.size
        if self.size is not None:
            new_h, new_w = self.size
        else:
            short = self.shortest_edge
            if w <= h:
                new_w, new_h = short, int(short * h / w)
            else:
                new_h, new_w = short, int(short * w / h)
        if (new_w, new_h) != (w, h):
            pil = pil.resize((new_w, new_h), resample=Image.Resampling(self.resample))
        out = np.asarray(pil)
        if self.crop is not None:
            ch, cw = self.crop
            top = max(0, (out.shape[0] - ch) // 2)
            left = max(0, (out.shape[1] - cw) // 2)
            out = out[top:top + ch, left:left + cw]
            if out.shape[0] != ch or out.shape[1] != cw:  # pad like the processors do
                padded = np.zeros((ch, cw, 3), np.uint8)
                padded[:out.shape[0], :out.shape[1]] = out
                out = padded
        return np.ascontiguousarray(out)


def _hw(value, default=None) -> tuple[int, int] | None:
    if value is None:
        return default
    if isinstance(value, int):
        return (value, value)
    if "height" in value and "width" in value:
        return (int(value["height"]), int(value["width"]))
    return default


def geometry_from_processor(cfg: dict, fallback_crop: int) -> FrameGeometry:
    """A ``FrameGeometry`` from a saved image or video processor config."""
    size = cfg.get("size") or {}
    crop = _hw(cfg.get("crop_size")) if cfg.get("do_center_crop", True) else None
    if cfg.get("video_processor_type", "").startswith("VJEPA2") or cfg.get(
            "image_processor_type", "").startswith("VJEPA2"):
        # V-JEPA 2's processor derives its resize from the crop: crop * 256 / 224.
        crop = crop or (fallback_crop, fallback_crop)
        size = {"shortest_edge": int(crop[0] * 256 / 224)}
    shortest = size.get("shortest_edge") if isinstance(size, dict) else None
    exact = _hw(size) if isinstance(size, dict) and "height" in size else None
    if isinstance(size, int):
        shortest = size
    if shortest is None and exact is None:
        exact = crop or (fallback_crop, fallback_crop)
    if crop is None and exact is None:
        crop = (shortest, shortest)
    return FrameGeometry(
        shortest_edge=shortest if exact is None else None,
        size=exact,
        crop=crop,
        resample=int(cfg.get("resample", 2)),
        rescale=float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0,
        mean=tuple(cfg.get("image_mean", IMAGENET_MEAN)) if cfg.get("do_normalize", True)
        else (0.0, 0.0, 0.0),
        std=tuple(cfg.get("image_std", IMAGENET_STD)) if cfg.get("do_normalize", True)
        else (1.0, 1.0, 1.0),
    )




def with_resolution(geometry: FrameGeometry, resolution: int) -> FrameGeometry:
    """The same preprocessing scaled so that the encoder input is ``resolution`` square."""
    out_h, _ = geometry.output_hw
    scale = resolution / out_h
    return replace(
        geometry,
        shortest_edge=round(geometry.shortest_edge * scale) if geometry.shortest_edge else None,
        size=(resolution, resolution) if geometry.size else None,
        crop=(resolution, resolution) if geometry.crop else None)


@dataclass(slots=True, frozen=True)
class EncoderSpec:
    """A resolved encoder: everything workers need to load it and shape its input.

    Attributes:
        source: Hugging Face id, local directory, or ``random:<preset>``.
        kind: ``video`` (clips of ``frames_per_clip`` frames) or ``image`` (one frame
            at a time; a clip's embedding is the mean over its frames).
        pretrained: False for randomly initialised weights.
        embedding_dim: values per pooled embedding.
        token_dim: values per token of the last hidden state.
        patch_size: pixels per token side, or None where the model has no token grid.
        tubelet_size: frames per token (video encoders; 1 for image encoders).
        native_size: the input size the model was configured for (side in pixels).
        weights_sha256: hash of the weight files where they are local, for the record.
    """

    source: str
    revision: str | None
    model_type: str
    kind: str
    pretrained: bool
    frames_per_clip: int
    embedding_dim: int
    geometry: FrameGeometry
    weights_sha256: str | None = None
    random_config: dict | None = field(default=None)
    token_dim: int | None = None
    patch_size: int | None = None
    tubelet_size: int = 1
    native_size: int | None = None

    @property
    def encoder_id(self) -> str:
        """The id written to every shard row (never a local path)."""
        if self.source.startswith(RANDOM_PREFIX) or not os.path.isdir(self.source):
            return self.source if not self.revision else f"{self.source}@{self.revision}"
        return f"local:{self.model_type}:{(self.weights_sha256 or '')[:16]}"

    @property
    def token_grid(self) -> tuple[int, int, int] | None:
        """(time, height, width) of the model's token grid for one clip, or None."""
        if not self.patch_size:
            return None
        h, w = self.geometry.output_hw
        return (self.frames_per_clip // self.tubelet_size, h // self.patch_size,
                w // self.patch_size)

    def describe(self) -> dict:
        return {"encoder_id": self.encoder_id, "model_type": self.model_type,
                "kind": self.kind, "pretrained": self.pretrained,
                "frames_per_clip": self.frames_per_clip, "embedding_dim": self.embedding_dim,
                "input_size": list(self.geometry.output_hw),
                "token_grid": list(self.token_grid) if self.token_grid else None,
                "weights_sha256": self.weights_sha256, "revision": self.revision}


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _weights_sha256(directory: str) -> str | None:
    names = sorted(n for n in os.listdir(directory)
                   if n.endswith((".safetensors", ".bin")) and not n.startswith("."))
    if not names:
        return None
    digest = hashlib.sha256()
    for name in names:
        with open(os.path.join(directory, name), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _read_processor_config(source: str, revision: str | None, local: bool) -> dict:
    for name in PROCESSOR_FILES:
        if local:
            path = os.path.join(source, name)
            if os.path.isfile(path):
                with open(path) as handle:
                    return json.load(handle)
        else:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import EntryNotFoundError

            try:
                with open(hf_hub_download(source, name, revision=revision)) as handle:
                    return json.load(handle)
            except EntryNotFoundError:
                continue
    return {}


def _vision_config(config):
    return getattr(config, "vision_config", None) or config


def _embedding_dim(config) -> int:
    vision = getattr(config, "vision_config", None)
    if vision is not None:
        # CLIP-style dual encoders project the pooled output; SigLIP has no projection.
        return int(getattr(config, "projection_dim", 0) or vision.hidden_size)
    dim = getattr(config, "hidden_size", None) or (getattr(config, "hidden_sizes", None) or [0])[-1]
    if not dim:
        raise EncoderUnavailable("cannot tell the embedding size from the model config")
    return int(dim)


def _random_processor(model_type: str, crop: int) -> dict:
    """The processor config the real model of a random preset ships with."""
    if model_type == "vjepa2":
        return {"video_processor_type": "VJEPA2VideoProcessor",
                "crop_size": {"height": crop, "width": crop},
                "size": {"shortest_edge": int(crop * 256 / 224)},
                "do_resize": True, "do_center_crop": True, "do_rescale": True,
                "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD),
                "resample": 2}
    # DINOv2's BitImageProcessor: shortest edge 256/224 of the crop, bicubic.
    return {"image_processor_type": "BitImageProcessor",
            "crop_size": {"height": crop, "width": crop},
            "size": {"shortest_edge": int(crop * 256 / 224)},
            "do_resize": True, "do_center_crop": True, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD), "resample": 3}


def random_model_config(spec_or_preset):
    """The transformers config of a random preset (by name) or of a random spec."""
    from transformers import AutoConfig

    if isinstance(spec_or_preset, str):
        model_type = RANDOM_PRESET_TYPES[spec_or_preset]
        cfg = RANDOM_PRESETS[spec_or_preset]
    else:
        model_type, cfg = spec_or_preset.model_type, spec_or_preset.random_config
    return AutoConfig.for_model(model_type, **cfg)


def _spec_from_config(config, processor_cfg: dict, *, source: str, revision: str | None,
                      pretrained: bool, frames_per_clip: int | None,
                      resolution: int | None, weights_sha256: str | None = None,
                      random_config: dict | None = None) -> EncoderSpec:
    model_type = getattr(config, "model_type", "unknown")
    kind = "video" if model_type in VIDEO_MODEL_TYPES else "image"
    vision = _vision_config(config)
    native = int(getattr(config, "crop_size", 0) or getattr(vision, "image_size", 224) or 224)
    if kind == "video":
        fpc = frames_per_clip or min(int(getattr(config, "frames_per_clip", 16) or 16), 16)
        tubelet = getattr(config, "tubelet_size", 1) or 1
        tubelet = int(tubelet[0] if isinstance(tubelet, (list, tuple)) else tubelet)
        if fpc % tubelet:
            raise EncoderUnavailable(f"frames per clip ({fpc}) must be a multiple of the "
                                     f"encoder's tubelet size ({tubelet})")
    else:
        fpc, tubelet = frames_per_clip or 1, 1
    patch = getattr(vision, "patch_size", None)
    patch = int(patch[0] if isinstance(patch, (list, tuple)) else patch) if patch else None
    if getattr(vision, "hidden_sizes", None):
        patch = None  # convolutional (ConvNeXt, ResNet): no token grid at the patch size
    geometry = geometry_from_processor(processor_cfg, native)
    if resolution:
        if patch and resolution % patch:
            raise EncoderUnavailable(f"resolution ({resolution}) must be a multiple of the "
                                     f"encoder's patch size ({patch})")
        geometry = with_resolution(geometry, resolution)
    return EncoderSpec(
        source=source, revision=revision, model_type=model_type, kind=kind,
        pretrained=pretrained, frames_per_clip=fpc, embedding_dim=_embedding_dim(config),
        geometry=geometry, weights_sha256=weights_sha256, random_config=random_config,
        token_dim=int(getattr(vision, "hidden_size", 0) or 0) or None, patch_size=patch,
        tubelet_size=tubelet, native_size=native)


def resolve_encoder(source: str, revision: str | None = None,
                    frames_per_clip: int | None = None,
                    resolution: int | None = None) -> EncoderSpec:
    """Check that an encoder can be loaded and read what the pipeline needs about it.

    Runs on the launcher, before anything is processed. Reads configs only (and hashes
    local weights); the weights themselves load on the workers.

    Args:
        source: Hugging Face id, ``save_pretrained`` folder or ``random:<preset>``.
        revision: Hub revision (branch, tag or commit).
        frames_per_clip: frames per clip (default: up to 16 for video encoders, 1 for image).
        resolution: square input side in pixels instead of the processor's (the resize
            before the crop scales with it).

    Raises:
        EncoderUnavailable: with a one-line message that says what to do.
    """
    if source.startswith(RANDOM_PREFIX):
        preset = source[len(RANDOM_PREFIX):]
        if preset not in RANDOM_PRESETS:
            raise EncoderUnavailable(f"unknown random encoder preset {preset!r}; choose from "
                                     f"{', '.join(RANDOM_PRESETS)}")
        model_type, cfg = RANDOM_PRESET_TYPES[preset], RANDOM_PRESETS[preset]
        config = random_model_config(preset)
        processor = _random_processor(model_type, _RANDOM_CROPS[preset])
        return _spec_from_config(config, processor, source=source, revision=None,
                                 pretrained=False, frames_per_clip=frames_per_clip,
                                 resolution=resolution, random_config=dict(cfg))

    from transformers import AutoConfig

    local = os.path.isdir(source)
    if not local and (source.startswith((".", "/", "~")) or os.sep in source.strip("/")
                      and source.count("/") > 1):
        raise EncoderUnavailable("cannot load the --encoder folder: it does not exist")
    try:
        if local:
            config = AutoConfig.from_pretrained(source, local_files_only=True)
        else:
            try:
                config = AutoConfig.from_pretrained(source, revision=revision,
                                                    local_files_only=True)
            except OSError:
                if not _hub_reachable():
                    raise EncoderUnavailable(
                        f"cannot load encoder {source!r}: the Hugging Face Hub is not reachable "
                        "and no cached copy exists; pass --encoder DIR (a directory saved with "
                        "save_pretrained) or download the model where the hub is reachable"
                    ) from None
                config = AutoConfig.from_pretrained(source, revision=revision)
        processor_cfg = _read_processor_config(source, revision, local)
    except EncoderUnavailable:
        raise
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        what = "the --encoder folder" if local else f"encoder {source!r}"
        reason = str(exc).splitlines()[0].replace(source, "<encoder>")
        raise EncoderUnavailable(f"cannot load {what}: {reason} Pass a Hugging Face model id or "
                                 "a folder saved with save_pretrained") from None

    weights = _weights_sha256(source) if local else None
    if local and weights is None:
        raise EncoderUnavailable("cannot load the --encoder folder: it has a config but no "
                                 "weights (*.safetensors or *.bin)")
    # A folder `egoveil make-encoder` wrote says so in its config: random weights.
    pretrained = not getattr(config, RANDOM_INIT_MARK, False)
    return _spec_from_config(
        config, processor_cfg, source=os.path.abspath(source) if local else source,
        revision=revision, pretrained=pretrained, frames_per_clip=frames_per_clip,
        resolution=resolution, weights_sha256=weights)


def save_random_encoder(directory: str, preset: str = "vjepa2-tiny") -> str:
    """Save a randomly initialised model with its processor config (``egoveil make-encoder``).

    Its ``config.json`` carries ``RANDOM_INIT_MARK``, so that runs with it record
    ``encoder_pretrained = false`` like the ``random:`` presets.
    """
    import torch
    from transformers import AutoModel

    if preset not in RANDOM_PRESETS:
        raise EncoderUnavailable(f"unknown preset {preset!r}; choose from "
                                 f"{', '.join(RANDOM_PRESETS)}")
    model_type = RANDOM_PRESET_TYPES[preset]
    torch.manual_seed(0)
    config = random_model_config(preset)
    setattr(config, RANDOM_INIT_MARK, True)
    model = AutoModel.from_config(config)
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    name = ("video_preprocessor_config.json" if model_type in VIDEO_MODEL_TYPES
            else "preprocessor_config.json")
    with open(os.path.join(directory, name), "w") as handle:
        json.dump(_random_processor(model_type, _RANDOM_CROPS[preset]), handle, indent=2)
    return directory
