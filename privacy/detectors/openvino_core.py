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
