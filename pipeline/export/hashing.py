"""SHA-256 on a thread of its own, so that an export hashes while it reads and writes.

An export hashes the shards it reads (against the manifest) and the files it writes
(for the lineage): about two bytes hashed per byte exported. ``hashlib`` releases the
GIL on large buffers, so a thread that hashes runs beside the one that parses and
writes, and on two free cores most of the hashing overlaps the rest
(bench/export.py).

Buffers handed to ``update`` are hashed later, in order: they must not change after
they are handed over (bytes, Arrow buffers, views of arrays nobody writes to). Small
pieces (tar headers, padding) are gathered into one buffer first, so the thread is
woken per large piece, not per header.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque

# Pieces below this are copied into a pending buffer instead of queued on their own.
_SMALL = 64 * 1024
# The bytes queued and not yet hashed, at most: the caller waits beyond this, so what
# the hashing holds is bounded whatever the size of the export.
_BACKLOG = 16 * 1024**2
# The bytes queued before the thread is woken.
_WAKE = 4 * 1024**2


class HashThread:
    """A thread that hashes, in order, what ``Sha256.update`` queues for it.

    The thread is woken when a few MB are queued (or a digest is asked for), and then
    hashes everything queued: a handful of wake-ups per hundred MB, not one per buffer.
    Use as a context manager; ``close`` waits for the queue to drain and ends the thread.
    """

    def __init__(self, name: str = "egoveil-hash") -> None:
        self._jobs: deque = deque()
        self._held = 0
        self._ready = threading.Condition()
        self._idle = False
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def sha256(self) -> Sha256:
        """A new digest whose updates this thread computes."""
        return Sha256(self)

    def _put(self, digest, data, size: int, wake: bool = False) -> None:
        with self._ready:
            while self._held >= _BACKLOG:
                self._ready.wait()
            self._jobs.append((digest, data, size))
            self._held += size
            if self._idle and (wake or self._held >= _WAKE):
                self._ready.notify_all()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._jobs and not self._closing:
                    self._idle = True
                    self._ready.wait()
                self._idle = False
                if not self._jobs:
                    return
                jobs, self._jobs = self._jobs, deque()
            done = 0
            for digest, data, size in jobs:
                if isinstance(data, threading.Event):
                    data.set()
                elif self._error is None:
                    try:
                        digest.update(data)  # outside the lock and the GIL
                    except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                        self._error = exc
                done += size
            with self._ready:
                self._held -= done
                self._ready.notify_all()

    def drain(self, digest) -> None:
        """Wait until every update queued for ``digest`` has been hashed."""
        done = threading.Event()
        self._put(digest, done, 0, wake=True)
        done.wait()
        if self._error is not None:
            raise RuntimeError("hashing failed") from self._error

    def close(self) -> None:
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        self._thread.join()

    def __enter__(self) -> HashThread:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Sha256:
    """A SHA-256 digest computed on a ``HashThread``; ``update`` returns at once."""

    def __init__(self, thread: HashThread) -> None:
        self._thread = thread
        self._sha = hashlib.sha256()
        self._small = bytearray()

    def update(self, data) -> None:
        size = memoryview(data).nbytes
        if size < _SMALL:
            self._small += data
            if len(self._small) >= _SMALL:
                self._flush_small()
            return
        self._flush_small()
        self._thread._put(self._sha, data, size)

    def _flush_small(self) -> None:
        if self._small:
            data = bytes(self._small)
            self._small = bytearray()
            self._thread._put(self._sha, data, len(data))

    def hexdigest(self) -> str:
        """The digest of everything updated so far (waits for the thread to get there)."""
        self._flush_small()
        self._thread.drain(self._sha)
        return self._sha.hexdigest()
