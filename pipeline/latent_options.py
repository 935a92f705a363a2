"""``egoveil run``'s latent and encoder-runtime options, checked on the launcher."""

from __future__ import annotations

import re

from pipeline.errors import UserError
from schemas.latents import LatentLayout
from transforms.embed import layout_for
from transforms.models.encoders import EncoderSpec
from transforms.models.runtime import RuntimeConfig


def parse_token_grid(text: str | None) -> tuple[int, int, int] | None:
    """``4x8x8`` -> (4, 8, 8).

    Raises:
        UserError: not three positive sizes.
    """
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[x,]\s*(\d+)\s*[x,]\s*(\d+)\s*", text)
    if not match or min(int(g) for g in match.groups()) < 1:
        raise UserError("--token-grid takes three positive sizes, time x height x width, "
                        "e.g. 4x8x8")
    return tuple(int(g) for g in match.groups())


def latent_settings(opts, encoder: EncoderSpec) -> tuple[LatentLayout, RuntimeConfig]:
    """The shard layout and encoder runtime that ``opts`` ask for.

    Raises:
        UserError: options that do not fit the encoder, as one line.
    """
    grid = parse_token_grid(opts.token_grid)
    try:
        layout = layout_for(encoder, opts.latent_dtype, opts.tokens, grid)
    except ValueError as exc:
        flag = "--token-grid" if grid else "--tokens"
        raise UserError(f"{flag}: {exc}") from None
    runtime = RuntimeConfig(device=opts.device, precision=opts.precision,
                            compile=opts.compile, batch_size=opts.batch_size)
    return layout, runtime
