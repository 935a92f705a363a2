"""The encoder on its device: uint8 clips in, pooled embeddings and token grids out.

RunInference loads one ``LoadedEncoder`` per worker process and shares it among
the process's threads, so a GPU holds one model however many bundles run at once.
On a GPU the model runs in bfloat16 under ``torch.inference_mode`` with PyTorch's
fused attention (SDPA); clips are stacked into pinned host memory, copied as uint8
(4 times fewer bytes than float32) and rescaled and normalized on the device. The
same code runs on the CPU in float32, and gives the same latents to bfloat16
tolerance (tests/test_encoders.py).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from schemas.latents import numpy_dtype
from transforms.models.encoders import EncoderSpec, EncoderUnavailable, random_model_config

PRECISIONS = ("auto", "bf16", "fp32")
DEVICES = ("auto", "cuda", "cpu")


@dataclass(slots=True, frozen=True)
class RuntimeConfig:
    """How the encoder runs on a worker.

    Attributes:
        device: ``auto`` (the GPU when there is one), ``cuda`` or ``cpu``.
        precision: ``auto`` (bfloat16 on GPUs, float32 on CPUs), ``bf16`` or ``fp32``.
        compile: ``torch.compile`` the model; batches are then padded to
            ``batch_size`` so that one graph serves every batch.
        batch_size: the largest batch the encoder is given.
    """

    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.precision!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


@dataclass(slots=True)
class Latents:
    """One batch's latents in their storage dtype.

    Attributes:
        pooled: (batch, embedding_dim).
        tokens: (batch, time, height, width, token_dim), or None when not asked for.
    """

    pooled: np.ndarray
    tokens: np.ndarray | None


def load_model(spec: EncoderSpec):
    """The transformers model of a spec, on the CPU in float32, in eval mode."""
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if spec.random_config is not None:
        torch.manual_seed(0)  # the same random encoder on every worker and every run
        return AutoModel.from_config(random_model_config(spec)).eval()
    try:
        return AutoModel.from_pretrained(spec.source, revision=spec.revision).eval()
    except (OSError, ValueError) as exc:
        raise EncoderUnavailable(f"cannot load encoder weights: {str(exc).splitlines()[0]}") \
            from exc


def _host_tensor(clips: np.ndarray):
    import torch

    clips = np.ascontiguousarray(clips)
    return torch.from_numpy(clips if clips.flags.writeable else clips.copy())


def _to_numpy(tensor, dtype: str) -> np.ndarray:
    import torch

    if dtype == "bfloat16":
        return tensor.view(torch.int16).numpy().view(numpy_dtype("bfloat16"))
    return tensor.numpy()


class LoadedEncoder:
    """A model on its device, turning uint8 clips into latents.

    Args:
        spec: the resolved encoder.
        device: ``cuda``, ``cpu``, ``auto`` or None (the GPU when there is one).
        precision: see ``RuntimeConfig``.
        compile: see ``RuntimeConfig``.
        batch_size: the largest batch (compiled models are padded to it).
    """

    def __init__(self, spec: EncoderSpec, device: str | None = None, precision: str = "auto",
                 compile: bool = False, batch_size: int = 8) -> None:
        import torch

        self.spec = spec
        if device in (None, "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise EncoderUnavailable("--device cuda was asked for but no GPU is visible")
        self.device = torch.device(device)
        bf16 = precision == "bf16" or (precision == "auto" and self.device.type == "cuda")
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        self.batch_size = batch_size
        model = load_model(spec).to(self.device, self.dtype)
        self.model = model
        # Dual encoders (CLIP, SigLIP): run the vision tower only, then its projection.
        dual = hasattr(model, "get_image_features") and hasattr(model, "vision_model")
        self._vision = model.vision_model if dual else None
        self._projection = getattr(model, "visual_projection", None) if dual else None
        tower = self._vision if dual else model
        self._kwargs: dict = {}
        if spec.kind == "image":
            params = inspect.signature(tower.forward).parameters
            if ("interpolate_pos_encoding" in params and spec.native_size
                    and spec.geometry.output_hw != (spec.native_size, spec.native_size)):
                self._kwargs["interpolate_pos_encoding"] = True
        elif spec.model_type == "vjepa2":
            self._kwargs["skip_predictor"] = True
        g = spec.geometry
        shape = (1, 1, 3, 1, 1) if spec.kind == "video" else (1, 3, 1, 1)
        self._mean = torch.tensor(g.mean, device=self.device).view(*shape)
        self._std = torch.tensor(g.std, device=self.device).view(*shape)
        self._local = threading.local()
        self._compiled = None
        if compile:
            self._compiled = torch.compile(self._forward, dynamic=False)
            # Compile once, here, before the worker's threads share the model.
            h, w = g.output_hw
            self.forward_pooled(torch.zeros((batch_size, spec.frames_per_clip, h, w, 3),
                                            dtype=torch.uint8))

    def stage(self, clips: Sequence[np.ndarray]):
        """Stack clips into one uint8 host tensor (pinned, reused per thread, on GPUs)."""
        import torch

        n = len(clips)
        shape = (max(n, self.batch_size), *clips[0].shape)
        if self.device.type != "cuda":
            return torch.from_numpy(np.stack(clips))
        buf = getattr(self._local, "pinned", None)
        if buf is None or tuple(buf.shape) != shape:
            buf = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
            self._local.pinned = buf
        np.stack(clips, out=buf.numpy()[:n])
        return buf[:n]

    def _forward(self, x):
        """uint8 (B, T, H, W, 3) on the device -> (pooled float32 (B, D), tokens (B, t, h, w, d))."""
        spec = self.spec
        # Normalize in float32 (as the processors do), then cast to the model's dtype.
        x = x.permute(0, 1, 4, 2, 3).float() * spec.geometry.rescale  # B,T,C,H,W
        b, t = x.shape[:2]
        if spec.kind == "video":
            x = ((x - self._mean) / self._std).to(self.dtype)
            if spec.model_type == "vjepa2":
                out = self.model(pixel_values_videos=x, **self._kwargs)
            else:
                out = self.model(pixel_values=x, **self._kwargs)
            hidden = out.last_hidden_state
            grid = spec.token_grid
            tokens = None
            if grid is not None and hidden.dim() == 3 and hidden.shape[1] >= int(np.prod(grid)):
                tokens = hidden[:, hidden.shape[1] - int(np.prod(grid)):].reshape(b, *grid, -1)
                pooled = tokens.float().mean(dim=(1, 2, 3))
            else:
                pooled = hidden.float().mean(dim=1)
            return pooled, tokens
        x = x.reshape(b * t, *x.shape[2:])
        x = ((x - self._mean) / self._std).to(self.dtype)
        tower = self._vision if self._vision is not None else self.model
        out = tower(pixel_values=x, **self._kwargs)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None and self._projection is not None:
            pooled = self._projection(pooled)
        hidden = out.last_hidden_state
        if pooled is None:
            pooled = hidden.mean(dim=1) if hidden.dim() == 3 else hidden.mean(dim=(2, 3))
        pooled = pooled.flatten(1).float().reshape(b, t, -1).mean(dim=1)
        tokens = None
        grid = spec.token_grid
        if grid is not None and hidden.dim() == 3:
            per_frame = grid[1] * grid[2]
            prefix = hidden.shape[1] - per_frame  # CLS and register tokens
            if prefix >= 0:
                tokens = hidden[:, prefix:].reshape(b, t, grid[1], grid[2], -1)
        return pooled, tokens

    def _run(self, x):
        import torch

        n = x.shape[0]
        if self._compiled is not None and n < self.batch_size:
            pad = x.new_zeros((self.batch_size - n, *x.shape[1:]))
            x = torch.cat([x, pad])
        x = x.to(self.device, non_blocking=True)
        pooled, tokens = (self._compiled or self._forward)(x)
        return pooled[:n], (tokens[:n] if tokens is not None else None)

    def forward_pooled(self, clips):
        """Pooled float32 embeddings of a uint8 (B, T, H, W, 3) batch, as a device tensor."""
        import torch

        with torch.inference_mode():
            x = clips if isinstance(clips, torch.Tensor) else _host_tensor(clips)
            return self._run(x)[0]

    def encode(self, clips, token_grid: tuple[int, int, int] | None = None,
               dtype: str = "float16") -> Latents:
        """Latents of a batch of clips in the storage dtype.

        Args:
            clips: uint8 (B, T, H, W, 3) array, a list of (T, H, W, 3) arrays, or a
                tensor from ``stage``.
            token_grid: (time, height, width) to return the token grid average-pooled
                to; the model's own grid returns it as it is; None returns no tokens.
            dtype: ``float16`` or ``bfloat16``.

        Raises:
            ValueError: the encoder produced values that are not finite in ``dtype``.
        """
        import torch
        import torch.nn.functional as F

        out_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float16
        with torch.inference_mode():
            if isinstance(clips, torch.Tensor):
                x = clips
            elif isinstance(clips, np.ndarray):
                x = _host_tensor(clips)
            else:
                x = self.stage(clips)
            pooled, tokens = self._run(x)
            pooled = pooled.to(out_dtype)
            kept = None
            if token_grid is not None:
                if tokens is None:
                    raise ValueError(f"encoder {self.spec.encoder_id} has no token grid")
                if tuple(token_grid) != tuple(tokens.shape[1:4]):
                    pooled_grid = F.adaptive_avg_pool3d(
                        tokens.permute(0, 4, 1, 2, 3).float(), tuple(token_grid))
                    tokens = pooled_grid.permute(0, 2, 3, 4, 1)
                kept = tokens.to(out_dtype).contiguous()
            finite = torch.isfinite(pooled).all()
            if kept is not None:
                finite &= torch.isfinite(kept).all()
            if not bool(finite):
                raise ValueError(f"encoder produced latents that are not finite in {dtype}"
                                 + ("; store them as bfloat16" if dtype == "float16" else ""))
            pooled_host = pooled.cpu()
            tokens_host = kept.cpu() if kept is not None else None
        return Latents(_to_numpy(pooled_host, dtype),
                       _to_numpy(tokens_host, dtype) if tokens_host is not None else None)

    def embed(self, clips: np.ndarray) -> np.ndarray:
        """(B, T, H, W, 3) uint8 -> (B, D) float32 pooled embeddings."""
        return self.forward_pooled(clips).float().cpu().numpy()
