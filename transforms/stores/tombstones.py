"""Reading and replacing an output's tombstone file through Beam's FileSystems.

The decisions live in ``privacy.tombstones``; this module only moves bytes, so
the launcher, the publish step and ``egoveil erase`` read the same file alike.
"""

from __future__ import annotations

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from privacy.tombstones import TOMBSTONE_PATH, TombstoneError, Tombstones


class ErasedDuringRun(RuntimeError):
    """Tombstones changed while a run was going: publishing could bring erased rows back."""


def tombstone_uri(output_dir: str) -> str:
    return FileSystems.join(output_dir, TOMBSTONE_PATH)


def read_tombstones(output_dir: str) -> Tombstones:
    """The output's tombstones; none when the output has no tombstone file.

    Raises:
        TombstoneError: the file exists but cannot be read or parsed (fail closed:
            an unreadable tombstone must not be taken for "nothing erased").
    """
    path = tombstone_uri(output_dir)
    try:
        if not FileSystems.exists(path):
            return Tombstones()
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            data = handle.read()
    except OSError as exc:
        raise TombstoneError(f"cannot read the tombstone file ({type(exc).__name__})") from None
    return Tombstones.parse(data)


def check_unchanged(output_dir: str, fingerprint: str) -> None:
    """Raises ``ErasedDuringRun`` when the tombstones differ from those a run started with."""
    if read_tombstones(output_dir).fingerprint() != fingerprint:
        raise ErasedDuringRun("an erasure was made in this output while the run was going; "
                              "nothing was published; run again to honour it")
