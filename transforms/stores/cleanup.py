"""What a publish or an erasure may delete from an output folder, and deleting it safely.

egoveil deletes a shard or clip file only when a manifest or an egoveil note named
it and the new manifest no longer does: the manifest being replaced (its files and
the files it lists as ``retired``, superseded but perhaps not yet deleted when the
operation that wrote it died), and the signed ``PUBLISHING`` notes in ``.staging/``
(the files a publish or erasure was about to move in). A file nothing named is left
alone, whatever it is called: it is not egoveil's. Nothing is ever deleted through a
symbolic link, and only regular files are; ``check_owned_folders`` refuses an
output whose own folders are links (a shared folder is not the output's to
clean). Temporaries of writes that died (``*.tmp-*``) are removed from the
published folders.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable

from apache_beam.io.filesystems import FileSystems

from privacy.audit_seal import SealKey, note_signer_key
from schemas.audit import PUBLISHING
from transforms.stores.filesystems import TEMP_MARK

# What shard and clip files are called (shards: staged, or published with a content hash).
SHARD_NAME = re.compile(r"^latents/part-(\d{5})(?:-[0-9a-f]{12})?\.parquet$")
CLIP_NAME = re.compile(r"^clips/([0-9a-f]{32})\.mp4$")
# The folders of a published output; none of them may be a symbolic link.
OWNED_FOLDERS = ("latents", "clips", "audit", "deadletter", "erasure", ".staging", ".cache")
# Where a write beside a published file can leave a temporary.
TEMP_FOLDERS = ("", "latents", "clips", "audit", "deadletter", "erasure")


class LinkedFolder(ValueError):
    """An output folder of egoveil's is a symbolic link; the message names which."""


def check_owned_folders(output: str) -> None:
    """Refuse an output whose own folders (``latents``, ``clips``, ...) are symbolic links.

    Raises:
        LinkedFolder: naming the folder, relative to the output.
    """
    if "://" in output:
        return  # object stores have no links
    for folder in OWNED_FOLDERS:
        if os.path.islink(os.path.join(output, folder)):
            raise LinkedFolder(f"{folder} is a symbolic link; egoveil writes and deletes only "
                               "in folders of its own (never through a link into a shared one)")


def deletable(rel: str) -> bool:
    """Whether ``rel`` is a name egoveil gives shards and clips."""
    return bool(SHARD_NAME.match(rel) or CLIP_NAME.match(rel))


def publishing_notes(output: str, signed_by: SealKey) -> list[dict]:
    """The ``PUBLISHING`` notes under ``.staging/`` signed with the output's audit key
    (any other note, or an unreadable one, names nothing)."""
    notes = []
    pattern = FileSystems.join(output, ".staging", "*", PUBLISHING)
    for meta in FileSystems.match([pattern])[0].metadata_list:
        try:
            with FileSystems.open(meta.path) as handle:
                note = json.loads(handle.read())
        except (OSError, ValueError):
            continue
        if note_signer_key(note) == signed_by:
            notes.append(note)
    return notes


def named_outputs(manifest: dict | None, notes: Iterable[dict]) -> set[str]:
    """Shard and clip paths the manifest (files and ``retired``) and the notes name."""
    named: set = set()
    if manifest:
        named |= {f.get("path") for f in manifest.get("files", []) if isinstance(f, dict)}
        named |= set(manifest.get("retired") or [])
    for note in notes:
        named |= {f.get("path") for f in note["files"] if isinstance(f, dict)}
    return {p for p in named if isinstance(p, str) and deletable(p)}


def retired_outputs(output: str, named: set[str], listed: set[str]) -> list[str]:
    """What a new manifest listing ``listed`` retires: named, unlisted, still present."""
    return sorted(p for p in named - listed if FileSystems.exists(FileSystems.join(output, p)))


def _owned_local_file(output: str, rel: str) -> bool:
    """A regular file reached without passing through a symbolic link."""
    parts = rel.split("/")
    path = os.path.join(output, *parts)
    if os.path.realpath(os.path.dirname(path)) != os.path.join(os.path.realpath(output),
                                                                 *parts[:-1]):
        return False
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def delete_owned(output: str, rels: Iterable[str]) -> int:
    """Delete each shard or clip ``rel`` that is a regular file inside the output itself.

    Returns:
        How many files were deleted.
    """
    paths = []
    for rel in rels:
        if not deletable(rel):
            continue
        path = FileSystems.join(output, *rel.split("/"))
        if "://" in output:
            if FileSystems.exists(path):
                paths.append(path)
        elif _owned_local_file(output, rel):
            paths.append(path)
    if paths:
        FileSystems.delete(paths)
    return len(paths)


def stale_temporaries(output: str) -> list[str]:
    """Temporaries (``*.tmp-*``) of writes beside published files that did not finish."""
    found = []
    for folder in TEMP_FOLDERS:
        pattern = FileSystems.join(output, *([folder] if folder else []), f"*{TEMP_MARK}*")
        for meta in FileSystems.match([pattern])[0].metadata_list:
            rel = meta.path[len(output.rstrip("/")) + 1:].replace("\\", "/")
            if re.fullmatch(rf"(?:[a-z]+/)?[A-Za-z0-9._-]+{re.escape(TEMP_MARK)}[A-Za-z0-9_-]+", rel) \
                    and ("://" in output or _owned_local_file(output, rel)):
                found.append(meta.path)
    return found
