"""The ``egoveil`` command for tests, in this process or in a child process.

A child process spends 8-9 s importing Beam, torch, transformers, great_expectations and
dlib before it does any work, so most tests call ``pipeline.cli.main`` in this process
through :func:`egoveil`: it returns what ``subprocess.run`` would (exit code, and what the
command wrote to its stdout and stderr, file descriptors included), and leaves logging,
the environment, the working directory, warning filters and signal handlers as it found
them. :func:`egoveil_process` starts a real ``python -m pipeline.cli``; tests use it
where the process is what they are about: killing or crashing it, two processes at once,
its memory, signals, Beam runners that start workers, environment variables read at
import time, and the console of a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator
from typing import BinaryIO

# The loggers pipeline.cli.configure_logging sets a level on.
_CONFIGURED = ("", "egoveil", "apache_beam", "transformers", "huggingface_hub", "urllib3",
               "filelock")
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD)


@contextlib.contextmanager
def _captured(out: BinaryIO, err: BinaryIO) -> Iterator[None]:
    """Send file descriptors 1 and 2, and ``sys.stdout``/``sys.stderr``, to ``out``/``err``
    (as a child process's pipes would get both Python's and native libraries' output)."""
    saved_fds = [os.dup(1), os.dup(2)]
    saved_streams = sys.stdout, sys.stderr
    for stream in saved_streams:
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    try:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        try:
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
    finally:
        sys.stdout, sys.stderr = saved_streams
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in saved_fds:
            os.close(fd)


@contextlib.contextmanager
def _environment(env: dict[str, str] | None) -> Iterator[None]:
    """``env`` set in ``os.environ`` for the call. ``tempfile`` reads TMPDIR once, at its first
    use; its cached folder is cleared for the call so that a TMPDIR given here counts, as
    it would in a new process."""
    saved = {name: os.environ.get(name) for name in env or {}}
    saved_tempdir = tempfile.tempdir
    os.environ.update(env or {})
    if "TMPDIR" in (env or {}):
        tempfile.tempdir = None
    try:
        yield
    finally:
        tempfile.tempdir = saved_tempdir
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def egoveil(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``egoveil ARGS`` in this process, as ``subprocess.run(..., capture_output=True,
    text=True)`` would report it.

    Args:
        args: the command line after ``egoveil``.
        env: variables set for the call (only ones egoveil reads while it runs, such as
            the pseudonym key; variables libraries read at import need
            :func:`egoveil_process`).
    """
    from pipeline.cli import main

    loggers = [logging.getLogger(name) for name in _CONFIGURED]
    levels = [logger.level for logger in loggers]
    handlers_of = {logger.name: logger.handlers[:] for logger in loggers}
    signals = {number: signal.getsignal(number) for number in _SIGNALS}
    cwd = os.getcwd()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            with _environment(env), warnings.catch_warnings(), _captured(out, err):
                try:
                    code = main(list(args))
                except SystemExit as exc:  # argparse's usage errors, --help
                    if exc.code is None or isinstance(exc.code, int):
                        code = exc.code or 0
                    else:
                        print(exc.code, file=sys.stderr)
                        code = 1
                except Exception:  # noqa: BLE001 - what -v lets through: the interpreter's exit
                    traceback.print_exc()
                    code = 1
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
                logger.handlers[:] = handlers_of[logger.name]
            for number, handler in signals.items():
                if handler is not None:
                    signal.signal(number, handler)
            os.chdir(cwd)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return subprocess.CompletedProcess(["egoveil", *args], code, stdout, stderr)


def egoveil_process(*args: str, env: dict[str, str] | None = None, timeout: float = 600
                    ) -> subprocess.CompletedProcess:
    """``python -m pipeline.cli ARGS`` in a child process, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)
