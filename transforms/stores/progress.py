"""Progress ticks from workers to a local launcher, for long DirectRunner runs.

Workers append one JSON line per finished unit to a per-process file in a folder
the launcher watches; on remote runners the folder is unset and Beam's metrics
(named counters in each DoFn) are the progress instead.
"""

from __future__ import annotations

import json
import os
import threading

# Seconds the anonymize stage reports per segment: all its time, and the part spent
# waiting on the decoder (the share that says whether decoding starves detection).
STAGE_SECONDS = ("busy_s", "decode_s")


class ProgressReporter:
    """Appends counts to ``<directory>/<pid>.jsonl``; does nothing without a directory."""

    def __init__(self, directory: str | None) -> None:
        self._dir = directory
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"_dir": self._dir}

    def __setstate__(self, state):
        self._dir = state["_dir"]
        self._lock = threading.Lock()

    def report(self, **counts: float) -> None:
        if not self._dir:
            return
        line = json.dumps(counts) + "\n"
        try:
            with self._lock, open(os.path.join(self._dir, f"{os.getpid()}.jsonl"), "a") as fh:
                fh.write(line)
        except OSError:
            pass  # progress is best effort; the run's outputs do not depend on it


def read_totals(directory: str) -> dict:
    """Sum every count reported so far."""
    totals: dict = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return totals
    for name in names:
        try:
            with open(os.path.join(directory, name)) as handle:
                for line in handle:
                    try:
                        for key, value in json.loads(line).items():
                            totals[key] = totals.get(key, 0) + value
                    except (ValueError, AttributeError):
                        continue  # a line being written right now
        except OSError:
            continue
    return totals
