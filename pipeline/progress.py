"""A console progress bar for local runs, fed by the workers' progress ticks."""

from __future__ import annotations

import sys
import threading
import time

from transforms.stores.progress import read_totals


class ProgressMonitor:
    """Polls the progress folder and shows recordings, segments and frames per second."""

    def __init__(self, directory: str, enabled: bool = True, interval_s: float = 0.5) -> None:
        self._dir = directory
        self._enabled = enabled and sys.stderr.isatty()
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = None
        self._start = time.perf_counter()

    def __enter__(self) -> ProgressMonitor:
        self._start = time.perf_counter()
        if self._enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=0, unit="seg", desc="egoveil", dynamic_ncols=True,
                             file=sys.stderr, leave=True)
            self._thread = threading.Thread(target=self._loop, name="egoveil-progress",
                                            daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._refresh()

    def _refresh(self) -> None:
        totals = read_totals(self._dir)
        if self._bar is None:
            return
        planned = int(totals.get("segments_planned", 0))
        done = int(totals.get("segments", 0))
        elapsed = max(1e-6, time.perf_counter() - self._start)
        fps = totals.get("frames", 0) / elapsed
        self._bar.total = max(planned, done)
        self._bar.n = done
        self._bar.set_postfix_str(
            f"recordings {int(totals.get('recordings', 0))}, "
            f"failed {int(totals.get('segments_failed', 0) + totals.get('recordings_failed', 0))}, "
            f"{fps:.1f} frames/s", refresh=False)
        self._bar.refresh()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._bar is not None:
            self._refresh()
            self._bar.close()

    def totals(self) -> dict:
        return read_totals(self._dir)
