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
from collections import OrderedDict

from privacy.detectors.base import DetectorError

_LOCK = threading.Lock()
_CORE: list = []
# Compiled models by weights, input, shape, configuration and preprocessing, shared by every
# detector of the process: a second instance of a detector (the verifier's, the coarse
# pass's at the same shape) compiles nothing again. A compiled model serves concurrent
# inference requests, so no lock is held while a frame is detected. One model per shape: a
# dynamic one runs slower.
_COMPILED_LOCK = threading.Lock()
_COMPILED: OrderedDict[tuple, object] = OrderedDict()
_COMPILED_KEPT = 16


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


def compiled_uint8(model, input_name: str, weights: str, batch_shape: tuple[int, ...],
                   config: dict, mean: list[float] | None = None,
                   std: list[float] | None = None, reverse_channels: bool = False):
    """``uint8_model`` compiled for the CPU with ``config``, from the process-wide cache.

    Args:
        weights: what identifies the weights (their sha256).
        The others: as ``uint8_model`` and ``Core.compile_model``.
    """
    key = (weights, input_name, tuple(batch_shape), tuple(sorted(config.items())),
           tuple(mean or ()), tuple(std or ()), reverse_channels)
    with _COMPILED_LOCK:
        if key in _COMPILED:
            _COMPILED.move_to_end(key)
            return _COMPILED[key]
        prepared = uint8_model(model, input_name, batch_shape, mean=mean, std=std,
                               reverse_channels=reverse_channels)
        _COMPILED[key] = openvino_core().compile_model(prepared, "CPU", config)
        if len(_COMPILED) > _COMPILED_KEPT:
            _COMPILED.popitem(last=False)
        return _COMPILED[key]
