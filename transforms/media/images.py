"""Still images: read with their EXIF orientation applied, written as pixels only."""

from __future__ import annotations

import io
import os

import cv2
import numpy as np

from transforms.media.inputs import MediaError, open_binary

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_image(uri: str) -> np.ndarray:
    """An image as RGB uint8 with its EXIF orientation applied (metadata not kept).

    Raises:
        MediaError: unreadable image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    with open_binary(uri) as handle:
        data = handle.read()
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise MediaError("unreadable", f"not a readable image ({type(exc).__name__})") from None


def write_image(image: np.ndarray, path: str) -> None:
    """Write RGB pixels only (OpenCV encoders write no EXIF, XMP or GPS)."""
    ext = os.path.splitext(path)[1].lower()
    ok, data = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise MediaError("unsupported", f"cannot encode an image as {ext!r}")
    with open(path, "wb") as handle:
        handle.write(data.tobytes())
