"""Temporal coverage: faces found in neighbouring frames also cover the frame between them.

Two mechanisms, both cheap and both applied:

- interpolation: a face detected before and after a frame (matched by position
  and size) is placed in the frame by linear interpolation, which follows fast
  motion such as a head turn;
- carry-over: every neighbour's box is also redacted here, grown with distance,
  which covers faces entering or leaving the frame and slow motion.

``propagated_boxes`` is what the anonymizer adds to a frame's own detections. Classes that
follow motion (plates, text: still in the world while the glasses move) use
``followed_boxes`` instead: each neighbour's boxes carried along the measured flow
(``privacy.motion``) and grown far less.
"""

from __future__ import annotations

import numpy as np

# A neighbour's box grows by this fraction per frame of distance.
CARRY_GROWTH_PER_FRAME = 0.15
# A box carried along the measured motion grows by this fraction per frame of distance
# (bench/classes.py --coverage chose it on the Aria plates).
FOLLOWED_GROWTH_PER_FRAME = 0.03
# Two detections are the same face when their centres are closer than this many
# face sizes per frame of separation, and their sizes differ by less than 2x.
MATCH_DISTANCE_PER_FRAME = 2.5
MAX_SIZE_RATIO = 2.0


def _centres_sizes(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    sizes = np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 1) * np.maximum(boxes[:, 3] - boxes[:, 1], 1))
    return centres, sizes


def grow(boxes: np.ndarray, factor: float) -> np.ndarray:
    """Boxes scaled about their centres."""
    if boxes.shape[0] == 0 or factor == 1.0:
        return boxes
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    hw = (boxes[:, 2] - boxes[:, 0]) * factor / 2
    hh = (boxes[:, 3] - boxes[:, 1]) * factor / 2
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1).astype(np.float32)


def interpolate(before: np.ndarray, after: np.ndarray, gap_before: int,
                gap_after: int) -> np.ndarray:
    """Boxes between matched detections ``gap_before`` frames earlier and ``gap_after`` later."""
    if before.shape[0] == 0 or after.shape[0] == 0:
        return np.zeros((0, 4), np.float32)
    cb, sb = _centres_sizes(before)
    ca, sa = _centres_sizes(after)
    span = gap_before + gap_after
    distance = np.linalg.norm(cb[:, None, :] - ca[None, :, :], axis=2)
    limit = MATCH_DISTANCE_PER_FRAME * span * np.minimum(sb[:, None], sa[None, :])
    ratio = np.maximum(sb[:, None], sa[None, :]) / np.minimum(sb[:, None], sa[None, :])
    cost = np.where((distance <= limit) & (ratio <= MAX_SIZE_RATIO), distance, np.inf)
    out = []
    used_b, used_a = set(), set()
    for flat in np.argsort(cost, axis=None):
        i, j = np.unravel_index(flat, cost.shape)
        if not np.isfinite(cost[i, j]):
            break
        if i in used_b or j in used_a:
            continue
        used_b.add(i)
        used_a.add(j)
        w = gap_before / span
        out.append(before[i] * (1 - w) + after[j] * w)
    return np.asarray(out, np.float32).reshape(-1, 4)


def propagated_boxes(neighbours: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Boxes a frame borrows from its neighbours.

    Args:
        neighbours: (signed frame offset, boxes) for the frames around the one being
            finished (offset 0 excluded), each with its validated detections.
    """
    parts = [grow(boxes, 1.0 + CARRY_GROWTH_PER_FRAME * abs(offset))
             for offset, boxes in neighbours if boxes.shape[0]]
    earlier = [(o, b) for o, b in neighbours if o < 0 and b.shape[0]]
    later = [(o, b) for o, b in neighbours if o > 0 and b.shape[0]]
    for ob, bb in earlier:
        for oa, ba in later:
            parts.append(grow(interpolate(bb, ba, -ob, oa), 1.1))
    if not parts:
        return np.zeros((0, 4), np.float32)
    return np.concatenate(parts).astype(np.float32)


def followed_boxes(neighbours: list[tuple[int, np.ndarray, np.ndarray | None]]) -> np.ndarray:
    """Boxes a frame borrows from its neighbours, carried along the motion.

    Args:
        neighbours: (signed frame offset, boxes, the boxes carried to this frame or None
            where the motion is unknown); a neighbour without motion is grown in place,
            like ``propagated_boxes`` grows it.
    """
    parts = [grow(boxes, 1.0 + CARRY_GROWTH_PER_FRAME * abs(offset)) if moved is None
             else grow(moved, 1.0 + FOLLOWED_GROWTH_PER_FRAME * abs(offset))
             for offset, boxes, moved in neighbours if boxes.shape[0]]
    if not parts:
        return np.zeros((0, 4), np.float32)
    return np.concatenate(parts).astype(np.float32)
