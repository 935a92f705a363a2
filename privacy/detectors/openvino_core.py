"""The process's one OpenVINO ``Core``, shared by every OpenVINO detector and never released.

OpenVINO's CPU plugin gives the thread that first compiles on it an alternate signal stack of
its own, and unmaps it when the plugin is released, restoring the old stack on whichever
thread releases it. A detector released on another thread (a Beam worker, a garbage
collection) left the first thread's signal stack pointing at unmapped memory, and the process
died of SIGSEGV at its next signal with a handler (a child's exit under torch's DataLoader).
One plugin for the process's life avoids that.
"""

from __future__ import annotations

import threading
import warnings

from privacy.detectors.base import DetectorError

_LOCK = threading.Lock()
_CORE: list = []


def openvino_core():
    """The shared ``openvino.Core``.

    Raises:
        DetectorError: OpenVINO is not installed.
    """
    with _LOCK:
        if not _CORE:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    import openvino
            except ImportError as exc:
                raise DetectorError("backend=openvino needs OpenVINO: pip install openvino") \
                    from exc
            _CORE.append(openvino.Core())
        return _CORE[0]


def uint8_model(model, input_name: str, batch_shape: tuple[int, ...],
                mean: list[float] | None = None, std: list[float] | None = None,
                reverse_channels: bool = False):
    """A copy of ``model`` that takes uint8 images (N, H, W, 3) as ``batch_shape`` gives them.

    The conversion to float, the channel order, the normalisation and the layout change
    run inside the compiled model, fused with its first layer: done in numpy they were a
    fifth of PP-OCR's time per 1080p frame, for the same outputs to the last bit.

    Args:
        model: the model read by ``openvino_core().read_model``; left unchanged.
        input_name: its image input, (N, 3, H, W) float.
        batch_shape: (N, H, W, 3), the uint8 batch the model will be given.
        mean, std: per channel of the model's input order, subtracted then divided by.
        reverse_channels: RGB frames to a model that takes BGR.
    """
    from openvino import Layout, Type
    from openvino.preprocess import PrePostProcessor

    n, height, width, channels = batch_shape
    reshaped = model.clone()
    reshaped.reshape({input_name: [n, channels, height, width]})
    ppp = PrePostProcessor(reshaped)
    tensor = ppp.input(input_name).tensor()
    tensor.set_element_type(Type.u8).set_layout(Layout("NHWC"))
    steps = ppp.input(input_name).preprocess()
    steps.convert_element_type(Type.f32)
    if reverse_channels:
        steps.reverse_channels()
    if mean is not None:
        steps.mean(list(mean))
    if std is not None:
        steps.scale(list(std))
    ppp.input(input_name).model().set_layout(Layout("NCHW"))
    return ppp.build()
