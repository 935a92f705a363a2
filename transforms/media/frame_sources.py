"""A recording's instants, each with all its views, whatever the layout.

One recording can hold one view (``none``), two eyes packed in one frame
(``sbs``: left half and right half; ``tb``: top and bottom), two eyes as the
first two video streams of a container (``streams``), two eyes as two files
(``pair``), or the allow-listed cameras of a Project Aria VRS file (``vrs``).
Every layout comes out the same way: instants in time order, each with an RGB
frame per view, so a stereo pair is decoded, detected and redacted together in
one step and no frame crosses a shuffle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from schemas.elements import STEREO_VIEWS, Recording
from transforms.media.video import DecodeStats, MediaError, iter_window
from transforms.media.vrs import iter_vrs_window


@dataclass(slots=True)
class Instant:
    """One instant of a recording; its frames are converted only when asked for."""

    time_s: float
    load: Callable[[], dict[str, np.ndarray]]

    def views(self) -> dict[str, np.ndarray]:
        return self.load()


def split_packed(image: np.ndarray, layout: str) -> dict[str, np.ndarray]:
    """The two views of a side-by-side (``sbs``) or top-bottom (``tb``) frame.

    An odd width or height loses its last column or row, so both views are the same size.
    """
    h, w = image.shape[:2]
    if layout == "sbs":
        half = w // 2
        left, right = image[:, :half], image[:, half:2 * half]
    elif layout == "tb":
        half = h // 2
        left, right = image[:half], image[half:2 * half]
    else:
        raise ValueError(f"not a packed stereo layout: {layout!r}")
    return {STEREO_VIEWS[0]: np.ascontiguousarray(left),
            STEREO_VIEWS[1]: np.ascontiguousarray(right)}


def _zip_views(left: Iterator, right: Iterator, fps: float | None, stats: DecodeStats
               ) -> Iterator[tuple[Instant, bool]]:
    """Pairs the frames of two synchronised sources by timestamp.

    A frame with no partner within half a frame period (one eye's frame was corrupt
    or missing) is dropped and counted corrupt, so one bad frame never shifts the
    pairing of the rest; the segment's corrupt-frame threshold still applies.
    """
    tolerance = 0.5 / (fps or 30.0)
    matched = unmatched = 0
    a, b = next(left, None), next(right, None)
    while a is not None and b is not None:
        (fa, inside), (fb, _) = a, b
        if fa.time_s < fb.time_s - tolerance:
            unmatched += 1
            a = next(left, None)
        elif fb.time_s < fa.time_s - tolerance:
            unmatched += 1
            b = next(right, None)
        else:
            matched += 1
            yield Instant(fa.time_s, lambda fa=fa, fb=fb: {
                STEREO_VIEWS[0]: fa.to_rgb(), STEREO_VIEWS[1]: fb.to_rgb()}), inside
            a, b = next(left, None), next(right, None)
    unmatched += sum(1 for _ in left) + sum(1 for _ in right) + (a is not None) + (b is not None)
    if unmatched and not matched:
        raise MediaError("unsupported", "the two views are not synchronised: no frame of one "
                                        "has a partner in the other")
    stats.corrupt += unmatched


def iter_instants(rec: Recording, start_s: float = 0.0, end_s: float | None = None,
                  context: int = 0, stats: DecodeStats | None = None
                  ) -> Iterator[tuple[Instant, bool]]:
    """The instants of [start_s, end_s) of a recording plus ``context`` on each side.

    Yields ``(instant, inside)`` like ``video_io.iter_window``; each instant has every
    view in ``rec.views``.

    Raises:
        MediaError: a source cannot be read, or two views are not synchronised.
    """
    stats = stats if stats is not None else DecodeStats()
    layout = rec.layout
    if layout == "vrs":
        for time_s, images, inside in iter_vrs_window(rec.uri, rec.streams, rec.stream_views,
                                                      start_s, end_s, context, stats):
            yield Instant(time_s, lambda images=images: images), inside
        return
    if layout in ("pair", "streams"):
        left = iter_window(rec.uri, start_s, end_s, context, stats)
        right = iter_window(rec.pair_uri, start_s, end_s, context, DecodeStats()) \
            if layout == "pair" else \
            iter_window(rec.uri, start_s, end_s, context, DecodeStats(), stream_index=1)
        yield from _zip_views(left, right, rec.video.fps, stats)
        return
    for frame, inside in iter_window(rec.uri, start_s, end_s, context, stats):
        if layout == "none":
            yield Instant(frame.time_s, lambda f=frame: {rec.view: f.to_rgb()}), inside
        else:
            yield Instant(frame.time_s,
                          lambda f=frame: split_packed(f.to_rgb(), layout)), inside
