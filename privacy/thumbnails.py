"""Thumbnails for the audit report, taken from redacted outputs only.

A thumbnail comes from an anonymized clip that ``manifest.json`` lists, and only
after the clip's bytes were checked against the manifest's sha256: a file dropped
into the folder, or a clip altered after publishing, never reaches the report.
Inputs are never opened; a folder without clips (a run without ``--clips``) gives
no thumbnails.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np

from privacy.output_store import OutputStore

THUMBNAIL_WIDTH = 240


@dataclass(slots=True, frozen=True)
class Thumbnail:
    """One frame of a published, redacted clip, small, as JPEG."""

    clip_id: str
    path: str
    time_s: float
    faces_redacted: int | None
    jpeg: bytes


def _middle_frame(data: bytes) -> tuple[np.ndarray, float] | None:
    import av

    with av.open(io.BytesIO(data)) as container:
        frames = [(f.to_ndarray(format="rgb24"), float(f.time or 0.0))
                  for f in container.decode(video=0)]
    return frames[len(frames) // 2] if frames else None


def _jpeg(image: np.ndarray, width: int) -> bytes:
    import cv2

    height = max(1, round(image.shape[0] * width / image.shape[1]))
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return encoded.tobytes()


def redacted_thumbnails(store: OutputStore, manifest: dict, faces_by_clip: dict[str, int],
                        limit: int = 12, width: int = THUMBNAIL_WIDTH) -> list[Thumbnail]:
    """Up to ``limit`` thumbnails, clips with the most redacted faces first.

    Args:
        store: the output folder.
        manifest: its manifest (only ``kind == "clip"`` entries are used).
        faces_by_clip: faces redacted per clip id, from the shards.
        limit: most thumbnails to make.
        width: thumbnail width in pixels.
    """
    clips = [f for f in manifest.get("files", []) if f.get("kind") == "clip"]
    clips.sort(key=lambda f: (-faces_by_clip.get(_clip_id(f["path"]), 0), f["path"]))
    thumbnails = []
    for entry in clips:
        if len(thumbnails) >= limit:
            break
        if not store.exists(entry["path"]):
            continue
        data = store.read(entry["path"])
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            continue  # altered after publishing: not a redacted output we can vouch for
        try:
            picked = _middle_frame(data)
        except Exception:  # noqa: BLE001 - a clip that does not decode gives no thumbnail
            picked = None
        if picked is None:
            continue
        image, time_s = picked
        clip_id = _clip_id(entry["path"])
        thumbnails.append(Thumbnail(clip_id, entry["path"], time_s,
                                    faces_by_clip.get(clip_id), _jpeg(image, width)))
    return thumbnails


def _clip_id(path: str) -> str:
    return path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
