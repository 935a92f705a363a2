"""One run or erasure at a time per output folder: the output lock (``DIR/.lock``).

Two runs publishing into one folder at once corrupt it: each one's clean-up deletes
files the other's manifest lists, and one run's log entries are lost. So ``egoveil
run`` and ``egoveil erase`` take the output's lock before they read its state, and
hold it until they are done; another one refuses at once (one line, exit 2) or, with
``--wait-for-lock SECONDS``, waits for it.

- **Local folders** (and network mounts whose filesystem implements ``flock``, as
  NFSv4 does): an exclusive ``fcntl.flock`` on ``DIR/.lock``. The kernel releases it
  when the process ends, however it ends, so a killed run never leaves a stale lock.
  The file says who holds it (operation, id, host, process, since), for the message
  the next one gets. The holder deletes it while still holding it; whoever opened it
  before checks, once locked, that the name still leads to the file it locked, and
  tries again otherwise, so two processes never hold two files of the same name.
- **Object stores** (``gs://``, ``s3://``): Beam's FileSystems has no atomic
  create-if-absent, so the lock is a best effort: a marker object naming its holder,
  written when none is there and read back after ``SETTLE_S`` seconds; the one whose
  marker is still there holds it. Two launches whose writes take longer than that to
  land can both pass; a launcher that dies leaves its marker, which is taken over only
  when it names a process of this host that no longer runs (otherwise the message says
  to delete ``DIR/.lock`` once no run or erasure is going). Launch runs into one
  object-store output from one place at a time.

A run's staging folder records that its run held the lock (``staging_marker``), so the
next holder knows a leftover staging folder for a dead run's (``dead_staging``) and not
for a run still going: only those are cleaned up. A run refused by a gate says so in
its marker: its folder, which holds the reasons, stays until an erasure.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas.audit import OUTPUT_LOCK

SETTLE_S = 2.0       # object stores: how long a marker must stay ours
POLL_S = 0.5         # how often a waiting run tries again
RUNNING = "RUNNING"  # in a staging folder: which locked operation it belongs to


class OutputLockError(Exception):
    """The output's lock cannot be taken; the message says why, in one line."""


class OutputBusy(OutputLockError):
    """Another run or erasure holds the output; the message says which."""


@dataclass(slots=True, frozen=True)
class Holder:
    """Who holds an output's lock."""

    op: str
    op_id: str
    host: str
    pid: int
    since: str
    token: str = ""

    def describe(self) -> str:
        return f"{self.op} {self.op_id} (process {self.pid} on {self.host}, since {self.since})"

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @staticmethod
    def parse(data: bytes) -> Holder | None:
        try:
            doc = json.loads(data)
            return Holder(op=str(doc["op"]), op_id=str(doc["op_id"]), host=str(doc["host"]),
                          pid=int(doc["pid"]), since=str(doc["since"]),
                          token=str(doc.get("token", "")))
        except (ValueError, KeyError, TypeError):
            return None


def holder_here(op: str, op_id: str = "") -> Holder:
    """This process, as the holder of a lock for ``op``."""
    return Holder(op=op, op_id=op_id, host=socket.gethostname(), pid=os.getpid(),
                  since=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  token=secrets.token_hex(8))


def _busy(holder: Holder | None, wait_s: float, marker: bool) -> OutputBusy:
    who = holder.describe() if holder else "another run or erasure"
    waited = f" after waiting {wait_s:g} s" if wait_s > 0 else ""
    stale = (f" (an object store's lock cannot tell a launcher that died: delete "
             f"{OUTPUT_LOCK} in it if none is going)") if marker else ""
    return OutputBusy(f"--output is in use by {who}{waited}; wait for it to finish, or pass "
                      f"--wait-for-lock SECONDS to wait{stale}")


class _LocalLock:
    def __init__(self, output: str) -> None:
        self._path = os.path.join(output, OUTPUT_LOCK)
        self._fd: int | None = None

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(self._path, flags, 0o600)
        except OSError as exc:  # a link or a folder in its place, a read-only output
            raise OutputLockError(f"--output: cannot open its lock file {OUTPUT_LOCK} "
                                  f"({exc.strerror or type(exc).__name__}); it must be a "
                                  "plain file") from None

    def try_acquire(self, me: Holder) -> bool:
        import fcntl

        for _ in range(8):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            try:
                same = os.stat(self._path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except OSError:
                same = False
            if not same:  # its holder removed it as we locked it: lock the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.to_bytes() + b"\n", 0)
            self._fd = fd
            return True
        return False

    def holder(self) -> Holder | None:
        try:
            with open(self._path, "rb") as handle:
                return Holder.parse(handle.read())
        except OSError:
            return None

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        try:
            os.unlink(self._path)  # still held: see the module docstring
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


class _MarkerLock:
    """The best effort for object stores (see the module docstring); works on any Beam
    filesystem, so it is tested on a local folder."""

    def __init__(self, output: str, settle_s: float = SETTLE_S) -> None:
        self._path = FileSystems.join(output, OUTPUT_LOCK)
        self._settle_s = settle_s
        self._me: Holder | None = None

    def holder(self) -> Holder | None:
        try:
            with FileSystems.open(self._path,
                                  compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                return Holder.parse(handle.read())
        except Exception:  # noqa: BLE001 - none there, or unreadable: no holder known
            return None

    def _write(self, me: Holder) -> None:
        with FileSystems.create(self._path,
                                compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            handle.write(me.to_bytes())

    def try_acquire(self, me: Holder) -> bool:
        if FileSystems.exists(self._path):
            held = self.holder()
            if held is None or not dead_here(held):
                return False
        self._write(me)
        time.sleep(self._settle_s)
        held = self.holder()
        if held is None or held.token != me.token:
            return False  # another launcher wrote after us: it holds the lock
        self._me = me
        return True

    def release(self) -> None:
        if self._me is None:
            return
        held = self.holder()
        if held is not None and held.token == self._me.token:
            FileSystems.delete([self._path])
        self._me = None


def dead_here(holder: Holder) -> bool:
    """Whether ``holder`` names a process of this host that no longer runs."""
    if holder.host != socket.gethostname():
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


@contextlib.contextmanager
def hold_output(output: str, op: str, op_id: str, wait_s: float = 0.0) -> Iterator[Holder]:
    """Hold ``output``'s lock for the ``with`` block.

    Args:
        output: the output folder (it must exist when local).
        op: ``run`` or ``erase``.
        op_id: the run or erasure id.
        wait_s: how long to wait for another holder to finish (0: refuse at once).

    Raises:
        OutputBusy: another run or erasure holds it (after ``wait_s``).
        OutputLockError: the lock file cannot be used.
    """
    lock = _MarkerLock(output) if "://" in output else _LocalLock(output)
    me = holder_here(op, op_id)
    deadline = time.monotonic() + max(wait_s, 0.0)
    while not lock.try_acquire(me):
        if time.monotonic() >= deadline:
            raise _busy(lock.holder(), wait_s, isinstance(lock, _MarkerLock))
        time.sleep(POLL_S)
    try:
        yield me
    finally:
        lock.release()


def staging_marker(op: str, op_id: str, failed_gate: bool = False) -> bytes:
    """What ``.staging/<id>/RUNNING`` holds: the locked operation the folder belongs to, and
    whether it ended refused by a gate (its folder keeps the reasons)."""
    return json.dumps({"op": op, "op_id": op_id, "locked": True, "failed_gate": failed_gate},
                      sort_keys=True).encode()


def dead_staging(output: str, own_id: str) -> tuple[list[str], list[str], list[str]]:
    """The staging folders under ``output`` other than ``own_id``'s, by what left them.

    Returns:
        Paths of the folders of locked operations that died (dead, since the caller
        holds the lock now), of runs a gate refused (kept for their reasons), and of
        anything else (of an egoveil before the lock, or unreadable: its run may still
        be going).
    """
    staging = FileSystems.join(output, ".staging")
    if "://" not in output:
        if not os.path.isdir(staging):
            return [], [], []
        names = sorted(os.listdir(staging))
    else:
        prefix = staging.rstrip("/") + "/"
        names = sorted({m.path[len(prefix):].split("/", 1)[0] for m in
                        FileSystems.match([prefix + "**"])[0].metadata_list})
    dead, gated, unknown = [], [], []
    for name in names:
        if name == own_id:
            continue
        folder = FileSystems.join(staging, name)
        try:
            with FileSystems.open(FileSystems.join(folder, RUNNING),
                                  compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                marker = json.loads(handle.read())
        except Exception:  # noqa: BLE001 - no marker, an empty one, or not JSON
            marker = {}
        if not isinstance(marker, dict) or marker.get("locked") is not True:
            unknown.append(folder)
        elif marker.get("failed_gate") is True:
            gated.append(folder)
        else:
            dead.append(folder)
    return dead, gated, unknown
