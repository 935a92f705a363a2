"""Reading the pseudonym key where it is used: the launcher and the DoFns' ``setup()``.

Local key files must be private to their owner (mode 600, as ``egoveil keygen``
writes them) and regular files; a key on an object store (``gs://``, ``s3://``) is
read through Beam's ``FileSystems`` and guarded by the store's access control,
which egoveil cannot inspect. ``$EGOVEIL_PSEUDONYM_KEY`` is visible to the user's
own processes only, and is checked for format like a file.
"""

from __future__ import annotations

import os
import stat

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from privacy.pseudonyms import PseudonymKey, PseudonymKeyError, key_file_mode_problem

# A key file is 65 bytes; reading more would only pull in a wrong file (a consent CSV).
_READ_LIMIT = 4096


def _local(path: str) -> str | None:
    if path.startswith("file://"):
        return path[len("file://"):]
    return None if "://" in path else path


def read_key_file(path: str) -> bytes:
    """The bytes of a key file, refusing a local one that group or others can open.

    Raises:
        PseudonymKeyError: unreadable, not a regular file, or not private.
    """
    local = _local(path)
    try:
        if local is not None:
            info = os.stat(local)
            if not stat.S_ISREG(info.st_mode):
                raise PseudonymKeyError("the key file is not a regular file")
            problem = key_file_mode_problem(info.st_mode)
            if problem:
                raise PseudonymKeyError(problem)
            with open(local, "rb") as handle:
                return handle.read(_READ_LIMIT)
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            return handle.read(_READ_LIMIT)
    except PseudonymKeyError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure is "cannot read the key"
        raise PseudonymKeyError(f"cannot read the key file ({type(exc).__name__})") from None


def load_key(path: str | None) -> PseudonymKey:
    """The pseudonym key from ``path``, or from ``$EGOVEIL_PSEUDONYM_KEY`` without one.

    Raises:
        PseudonymKeyError: missing, unreadable, not private, or not a keygen key.
    """
    return PseudonymKey.load(path, read_key_file)
