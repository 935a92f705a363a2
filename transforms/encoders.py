"""Encoders: resolving ``--encoder`` on the launcher, loading it on workers, preprocessing.

``--encoder`` takes a Hugging Face model id, a local directory saved with
``save_pretrained``, or ``random:<preset>`` for a randomly initialised V-JEPA 2 of
a small size (demos and tests; every shard row then says it is not pretrained).

Preprocessing reproduces the model's own processor from its saved config (resize,
centre crop, rescale, normalize, with the processor's PIL resampling): the
transformers video processors need torchvision, which this project does not
install beside the pinned CPU torch. Frames are resized and cropped on the CPU
right after redaction, so only encoder-sized frames travel to the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

DEFAULT_ENCODER = "facebook/vjepa2-vitl-fpc64-256"
RANDOM_PREFIX = "random:"
VIDEO_MODEL_TYPES = ("vjepa2", "videomae", "vivit", "timesformer")
PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Small V-JEPA 2 configurations for demos and tests (same architecture, random weights).
RANDOM_PRESETS = {
    "vjepa2-tiny": dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=3,
                        crop_size=64, frames_per_clip=8, pred_hidden_size=48,
                        pred_num_hidden_layers=1, pred_num_attention_heads=3,
                        num_pooler_layers=1),
    "vjepa2-small": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                         crop_size=128, frames_per_clip=16, pred_hidden_size=96,
                         pred_num_hidden_layers=2, pred_num_attention_heads=3,
                         num_pooler_layers=1),
}


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


@dataclass(slots=True, frozen=True)
class EncoderSpec:
    """A resolved encoder: everything workers need to load it and shape its input.

    Attributes:
        source: Hugging Face id, local directory, or ``random:<preset>``.
        kind: ``video`` (clips of ``frames_per_clip`` frames) or ``image`` (one frame).
        pretrained: False for randomly initialised weights.
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

    @property
    def encoder_id(self) -> str:
        """The id written to every shard row (never a local path)."""
        if self.source.startswith(RANDOM_PREFIX) or not os.path.isdir(self.source):
            return self.source if not self.revision else f"{self.source}@{self.revision}"
        return f"local:{self.model_type}:{(self.weights_sha256 or '')[:16]}"

    def describe(self) -> dict:
        return {"encoder_id": self.encoder_id, "model_type": self.model_type,
                "kind": self.kind, "pretrained": self.pretrained,
                "frames_per_clip": self.frames_per_clip, "embedding_dim": self.embedding_dim,
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


def _embedding_dim(config) -> int:
    for attr in ("projection_dim", "hidden_size"):
        vision = getattr(config, "vision_config", None)
        if vision is not None and getattr(vision, attr, None):
            return int(getattr(vision, attr))
    dim = getattr(config, "hidden_size", None) or (getattr(config, "hidden_sizes", None) or [0])[-1]
    if not dim:
        raise EncoderUnavailable("cannot tell the embedding size from the model config")
    return int(dim)


def resolve_encoder(source: str, revision: str | None = None,
                    frames_per_clip: int | None = None) -> EncoderSpec:
    """Check that an encoder can be loaded and read what the pipeline needs about it.

    Runs on the launcher, before anything is processed. Reads configs only (and hashes
    local weights); the weights themselves load on the workers.

    Raises:
        EncoderUnavailable: with a one-line message that says what to do.
    """
    if source.startswith(RANDOM_PREFIX):
        preset = source[len(RANDOM_PREFIX):]
        if preset not in RANDOM_PRESETS:
            raise EncoderUnavailable(f"unknown random encoder preset {preset!r}; choose from "
                                     f"{', '.join(RANDOM_PRESETS)}")
        cfg = dict(RANDOM_PRESETS[preset])
        if frames_per_clip:
            cfg["frames_per_clip"] = frames_per_clip
        crop = cfg["crop_size"]
        geometry = geometry_from_processor(
            {"video_processor_type": "VJEPA2VideoProcessor", "crop_size": crop}, crop)
        return EncoderSpec(source=source, revision=None, model_type="vjepa2", kind="video",
                           pretrained=False, frames_per_clip=cfg["frames_per_clip"],
                           embedding_dim=cfg["hidden_size"], geometry=geometry,
                           random_config=cfg)

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

    model_type = getattr(config, "model_type", "unknown")
    kind = "video" if model_type in VIDEO_MODEL_TYPES else "image"
    if local and _weights_sha256(source) is None:
        raise EncoderUnavailable("cannot load the --encoder folder: it has a config but no "
                                 "weights (*.safetensors or *.bin)")
    vision = getattr(config, "vision_config", config)
    crop = int(getattr(config, "crop_size", 0) or getattr(vision, "image_size", 224) or 224)
    if kind == "video":
        fpc = frames_per_clip or int(getattr(config, "frames_per_clip", 16) or 16)
        fpc = min(fpc, 16) if frames_per_clip is None else fpc
    else:
        fpc = frames_per_clip or 1
    if kind == "video" and model_type == "vjepa2":
        tubelet = int(getattr(config, "tubelet_size", 2))
        if fpc % tubelet:
            raise EncoderUnavailable(f"frames per clip ({fpc}) must be a multiple of the "
                                     f"encoder's tubelet size ({tubelet})")
    return EncoderSpec(
        source=source if not local else os.path.abspath(source),
        revision=revision, model_type=model_type, kind=kind, pretrained=True,
        frames_per_clip=fpc, embedding_dim=_embedding_dim(config),
        geometry=geometry_from_processor(processor_cfg, crop),
        weights_sha256=_weights_sha256(source) if local else None,
    )


class LoadedEncoder:
    """A model on its device, turning uint8 clips into pooled float32 embeddings."""

    def __init__(self, spec: EncoderSpec, device: str | None = None) -> None:
        import torch

        self.spec = spec
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = _load_model(spec).to(self.device, self.dtype).eval()
        g = spec.geometry
        shape = (1, 1, 3, 1, 1) if spec.kind == "video" else (1, 3, 1, 1)
        self._mean = torch.tensor(g.mean, device=self.device).view(*shape)
        self._std = torch.tensor(g.std, device=self.device).view(*shape)

    def embed(self, clips: np.ndarray) -> np.ndarray:
        """(B, T, H, W, 3) uint8 -> (B, D) float32 pooled embeddings."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(clips)).to(self.device, non_blocking=True)
            x = x.permute(0, 1, 4, 2, 3).float() * self.spec.geometry.rescale  # B,T,C,H,W
            if self.spec.kind == "video":
                x = ((x - self._mean) / self._std).to(self.dtype)
                out = self.model(pixel_values_videos=x, skip_predictor=True) \
                    if self.spec.model_type == "vjepa2" else self.model(pixel_values=x)
                pooled = out.last_hidden_state.mean(dim=1)
            else:
                b, t = x.shape[:2]
                x = x.reshape(b * t, *x.shape[2:])
                x = ((x - self._mean) / self._std).to(self.dtype)
                pooled = _image_features(self.model, x).reshape(b, t, -1).mean(dim=1)
            return pooled.float().cpu().numpy()


def _image_features(model, pixels):
    if hasattr(model, "get_image_features"):
        feats = model.get_image_features(pixel_values=pixels)
        return feats if not hasattr(feats, "pooler_output") else feats.pooler_output
    out = model(pixel_values=pixels)
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        pooled = out.last_hidden_state.mean(dim=1)
    return pooled.flatten(1)


def _load_model(spec: EncoderSpec):
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if spec.random_config is not None:
        from transformers import VJEPA2Config, VJEPA2Model

        torch.manual_seed(0)  # the same random encoder on every worker and every run
        return VJEPA2Model(VJEPA2Config(**spec.random_config))
    try:
        return AutoModel.from_pretrained(spec.source, revision=spec.revision)
    except (OSError, ValueError) as exc:
        raise EncoderUnavailable(f"cannot load encoder weights: {str(exc).splitlines()[0]}") \
            from exc


def save_random_encoder(directory: str, preset: str = "vjepa2-tiny") -> str:
    """Save a randomly initialised V-JEPA 2 with its processor config (``egoveil make-encoder``)."""
    import torch
    from transformers import VJEPA2Config, VJEPA2Model

    if preset not in RANDOM_PRESETS:
        raise EncoderUnavailable(f"unknown preset {preset!r}; choose from "
                                 f"{', '.join(RANDOM_PRESETS)}")
    cfg = RANDOM_PRESETS[preset]
    torch.manual_seed(0)
    model = VJEPA2Model(VJEPA2Config(**cfg))
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    crop = cfg["crop_size"]
    processor = {
        "video_processor_type": "VJEPA2VideoProcessor",
        "crop_size": {"height": crop, "width": crop},
        "size": {"shortest_edge": int(crop * 256 / 224)},
        "do_resize": True, "do_center_crop": True, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD), "resample": 2,
    }
    with open(os.path.join(directory, "video_preprocessor_config.json"), "w") as handle:
        json.dump(processor, handle, indent=2)
    return directory
