"""The frame-source protocol: what every input format offers the pipeline.

A frame source recognises the requests it reads, probes one (before any frame is
decoded: caps, geometry, views) into one or more admitted ``Recording``s, and
iterates a time window of a recording as instants, each with an RGB frame per
view. Every format comes out the same way, so a stereo pair is decoded, detected
and redacted together in one step and no frame crosses a shuffle. A new format is
one module implementing ``FrameSource`` and one line in ``sources.REGISTRY``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from schemas.elements import Recording
from schemas.records import AuditEvent
from schemas.sidecar import RecordingRequest
from transforms.media.inputs import DecodeCaps, DecodeStats


@dataclass(slots=True)
class Instant:
    """One instant of a recording; its frames are converted only when asked for."""

    time_s: float
    load: Callable[[], dict[str, np.ndarray]]

    def views(self) -> dict[str, np.ndarray]:
        return self.load()


class Probed(NamedTuple):
    """What probing a request admitted: its recordings, and an audit event to log."""

    recordings: list[Recording]
    event: AuditEvent | None = None


class FrameSource(abc.ABC):
    """One input format.

    Attributes:
        name: the format, for messages.
        layouts: the ``Recording.layout`` values this source reads back.
        extensions: file name endings a folder search picks up for ``egoveil run``.
        recordings: whether ``egoveil run`` admits it as a recording (a still image is
            redacted by ``egoveil redact`` but is no recording to train on).
    """

    name: str = ""
    layouts: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    recordings: bool = True

    @abc.abstractmethod
    def recognises(self, request: RecordingRequest, head: bytes) -> bool:
        """Whether this source reads ``request``, whose file starts with ``head``."""

    @abc.abstractmethod
    def probe(self, request: RecordingRequest, base: Recording, caps: DecodeCaps) -> Probed:
        """The request's recordings: ``base`` (hashed and pseudonymized) with what probing
        found (geometry, views, layout), before any frame is decoded.

        Raises:
            MediaError: unreadable, unsupported, or above a cap.
        """

    @abc.abstractmethod
    def instants(self, rec: Recording, start_s: float, end_s: float | None, context: int,
                 stats: DecodeStats) -> Iterator[tuple[Instant, bool]]:
        """The instants of [start_s, end_s) plus ``context`` on each side, in time order.

        Yields ``(instant, inside)``: ``inside`` is False for context instants. Each
        instant has every view in ``rec.views``. Frames that cannot be decoded are
        skipped and counted in ``stats``.

        Raises:
            MediaError: a source cannot be read.
        """
