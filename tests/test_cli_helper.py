"""tests/cli.py's in-process ``egoveil()`` reports what a child process reports, and leaves
this process as it found it."""

from __future__ import annotations

import logging
import os
import signal
import tempfile

from tests.cli import egoveil, egoveil_process


def test_a_mistake_reads_the_same_in_process_and_in_a_child_process(tmp_path):
    args = ("redact", str(tmp_path / "missing.mp4"), str(tmp_path / "x.mp4"))
    here, child = egoveil(*args), egoveil_process(*args)
    assert child.returncode == 2 and child.stderr.startswith("egoveil: error: ")
    assert (here.returncode, here.stdout, here.stderr) == \
        (child.returncode, child.stdout, child.stderr)
    usage = egoveil("frobnicate")  # argparse exits through SystemExit
    assert usage.returncode == 2 and "invalid choice: 'frobnicate'" in usage.stderr


def test_a_call_leaves_logging_environment_and_signals_as_they_were(tmp_path):
    root, ours = logging.getLogger(), logging.getLogger("egoveil")
    before = (root.handlers[:], root.level, ours.level, dict(os.environ), os.getcwd(),
              signal.getsignal(signal.SIGINT), tempfile.gettempdir())
    result = egoveil("keygen", str(tmp_path / "new.key"), env={"TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "egoveil: " in result.stderr  # the command's own lines, captured
    assert (root.handlers, root.level, ours.level, dict(os.environ), os.getcwd(),
            signal.getsignal(signal.SIGINT), tempfile.gettempdir()) == before
