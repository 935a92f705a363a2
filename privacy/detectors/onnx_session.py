"""An onnxruntime session for a detector's weights, with one-line errors."""

from __future__ import annotations

import warnings

from privacy.detectors.base import DetectorError


def onnx_session(path, what: str):
    """An ``onnxruntime.InferenceSession`` on every available provider.

    Args:
        path: the ONNX file (or its bytes).
        what: what the file is, for the error message (e.g. ``the plate model``).

    Raises:
        DetectorError: onnxruntime is missing or cannot load the file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import onnxruntime
    except ImportError as exc:
        raise DetectorError("onnxruntime is needed (or onnxruntime-gpu): "
                            "pip install onnxruntime") from exc
    onnxruntime.set_default_logger_severity(3)
    try:
        return onnxruntime.InferenceSession(path, providers=onnxruntime.get_available_providers())
    except Exception as exc:  # onnxruntime raises its own exception types
        raise DetectorError(f"cannot load {what} with onnxruntime: {exc}") from exc
