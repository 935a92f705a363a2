"""Draw the hand-labelled plate boxes of the Aria clip, to check them by eye.

    python bench/plates_draw.py --out /tmp/aria-plates            # every frame, boxes drawn
    python bench/plates_draw.py --out /tmp/aria-plates --sheet C  # one plate, 24 zoomed tiles

Readable plates are drawn green, visible but unreadable ones yellow. The pictures go to a
folder outside the repository (they show the clip's real plates).
"""

from __future__ import annotations

import argparse
import json
import os

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GT_FILE = os.path.join(HERE, "plates_gt", "aria_parking_plates.json")


def frames_bgr(media: str) -> list[np.ndarray]:
    import av

    with av.open(os.path.join(media, "videos", "aria_parking_plates.mp4")) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


def draw_frame(frame: np.ndarray, labels: list[dict]) -> np.ndarray:
    out = frame.copy()
    for label in labels:
        x0, y0, x1, y1 = label["box"]
        colour = (0, 255, 0) if label["readable"] else (0, 220, 255)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, 2)
        cv2.putText(out, label["plate"], (x0, y0 - 6), cv2.FONT_HERSHEY_SIMPLEX, 1.0, colour, 2)
    return out


def contact_sheet(frames: list[np.ndarray], truth: dict, plate: str, half: int = 100) -> np.ndarray:
    """One 320x240 tile per frame around ``plate``'s box (blank where it is not labelled)."""
    tiles = []
    for index, frame in enumerate(frames):
        tile = np.zeros((240, 320, 3), np.uint8)
        label = next((lab for lab in truth["labels"].get(str(index), [])
                      if lab["plate"] == plate), None)
        if label:
            padded = cv2.copyMakeBorder(draw_frame(frame, [label]), half * 2, half * 2,
                                        half * 2, half * 2, cv2.BORDER_CONSTANT)
            x0, y0, x1, y1 = label["box"]
            cx, cy = (x0 + x1) // 2 + half * 2, (y0 + y1) // 2 + half * 2
            crop = padded[cy - half * 3 // 4:cy + half * 3 // 4, cx - half:cx + half]
            tile = cv2.resize(crop, (320, 240), interpolation=cv2.INTER_CUBIC)
        cv2.putText(tile, str(index), (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 255), 2)
        tiles.append(cv2.copyMakeBorder(tile, 2, 2, 2, 2, cv2.BORDER_CONSTANT,
                                        value=(255, 255, 255)))
    rows = [np.hstack(tiles[r:r + 4]) for r in range(0, len(tiles), 4)]
    return np.vstack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="a folder outside the repository")
    parser.add_argument("--sheet", default=None, help="a plate id: one zoomed sheet")
    parser.add_argument("--media", default=os.environ.get(
        "EGOVEIL_MEDIA", os.path.join(HERE, "..", "..", "shared", "media")))
    args = parser.parse_args()
    truth = json.load(open(GT_FILE))
    frames = frames_bgr(args.media)
    os.makedirs(args.out, exist_ok=True)
    if args.sheet:
        cv2.imwrite(os.path.join(args.out, f"sheet-{args.sheet}.png"),
                    contact_sheet(frames, truth, args.sheet))
        return
    for index, frame in enumerate(frames):
        cv2.imwrite(os.path.join(args.out, f"frame-{index:02d}.png"),
                    draw_frame(frame, truth["labels"].get(str(index), [])))


if __name__ == "__main__":
    main()
