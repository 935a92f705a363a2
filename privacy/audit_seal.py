"""Signed seals: who may close the audit log (PRIVACY.md 15).

A hash chain shows that entries were changed, dropped or reordered, but anyone who
can write to the output folder can append to it: edit a shard, put its new sha256
in ``manifest.json`` and chain a new ``files_sealed`` entry. So every seal is signed
with Ed25519 (``cryptography``) under the folder owner's audit key, and so is the
``PUBLISHING`` note of a run that is moving files in. An auditor checks the
signatures with the public half alone (``egoveil keygen`` writes it beside the
key, ``FILE.pub``): verifying needs no secret, and a seal made with any other key,
or none, is rejected.

A seal signs the entry as it is chained (``seq``, ``prev``, ``op``, ``op_id``,
``at``, the sealed file list's digest and the signer's public key), so one
signature commits to every entry before it and to the published files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from privacy.audit_chain import canonical_json, entry_hash

SEAL_DOMAIN = b"egoveil-audit-seal-v1\n"
NOTE_DOMAIN = b"egoveil-publishing-note-v1\n"
SEAL_KEY_FIELD = "seal_key"    # in a seal's counts: the signer's public key, 64 hex
SIGNATURE_FIELD = "signature"  # in a seal's counts: the Ed25519 signature, 128 hex
FINGERPRINT_HEX = 32


class SealKeyError(ValueError):
    """A public audit key file that cannot be used; the message names no path."""


@dataclass(slots=True, frozen=True)
class SealKey:
    """The public half of an audit key: checks seals, signs nothing.

    Attributes:
        raw: the 32-byte Ed25519 public key.
    """

    raw: bytes

    @property
    def hex(self) -> str:
        return self.raw.hex()

    @property
    def fingerprint(self) -> str:
        """What records and manifests name the key by (sha256 of the raw key, 128 bits)."""
        return hashlib.sha256(b"egoveil-audit-key\n" + self.raw).hexdigest()[:FINGERPRINT_HEX]

    @staticmethod
    def from_hex(value: object) -> SealKey:
        if not isinstance(value, str) or len(value) != 64:
            raise SealKeyError("not an Ed25519 public key (64 hex characters)")
        try:
            return SealKey(bytes.fromhex(value))
        except ValueError:
            raise SealKeyError("not an Ed25519 public key (64 hex characters)") from None

    @staticmethod
    def from_pem(data: bytes) -> SealKey:
        """The key in a public key file as ``egoveil keygen`` writes it (PEM).

        Raises:
            SealKeyError: the file holds something else (a secret key, say).
        """
        if b"PRIVATE KEY" in data or (b"BEGIN" not in data and len(data.strip()) == 64):
            raise SealKeyError("this is a secret key; an auditor needs only its public audit "
                               "key (FILE.pub, `egoveil keygen --public FILE` writes it)")
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise SealKeyError("not a public audit key (PEM, as `egoveil keygen` writes "
                               "FILE.pub)") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SealKeyError("not an Ed25519 public key")
        return SealKey(key.public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw))

    def to_pem(self) -> bytes:
        return Ed25519PublicKey.from_public_bytes(self.raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def verifies(self, message: bytes, signature: object) -> bool:
        if not isinstance(signature, str):
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(bytes.fromhex(signature),
                                                                message)
        except (InvalidSignature, ValueError):
            return False
        return True


class SealSigner:
    """The secret half of an audit key. Never pickled: load it where it is used.

    Args:
        seed: 32 secret bytes (``PseudonymKey.seal_signer`` derives them).
    """

    __slots__ = ("_private", "public")

    def __init__(self, seed: bytes) -> None:
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = SealKey(self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    def sign(self, message: bytes) -> str:
        return self._private.sign(message).hex()

    def __repr__(self) -> str:
        return f"SealSigner(fingerprint={self.public.fingerprint})"

    def __reduce__(self):
        raise TypeError("a SealSigner is never serialized; load the key where it is used")


def _seal_message(entry: dict) -> bytes:
    counts = {k: v for k, v in entry["counts"].items() if k != SIGNATURE_FIELD}
    body = {k: v for k, v in entry.items() if k != "hash"}
    return SEAL_DOMAIN + canonical_json(dict(body, counts=counts))


def sign_seal(entry: dict, signer: SealSigner) -> dict:
    """``entry`` (a ``files_sealed`` entry) signed, its hash recomputed over the signature."""
    counts = dict(entry["counts"], **{SEAL_KEY_FIELD: signer.public.hex})
    counts.pop(SIGNATURE_FIELD, None)
    signed = dict(entry, counts=counts)
    counts[SIGNATURE_FIELD] = signer.sign(_seal_message(signed))
    signed["hash"] = entry_hash(signed)
    return signed


def seal_signer_key(entry: dict) -> tuple[SealKey | None, str | None]:
    """Who signed a ``files_sealed`` entry, or why it does not count as signed.

    Returns:
        (the signer's public key, None) when the signature holds, else (None, the problem).
    """
    counts = entry.get("counts") or {}
    if SIGNATURE_FIELD not in counts or SEAL_KEY_FIELD not in counts:
        return None, "the seal is not signed: anyone who can write to the folder could " \
                     "have made it"
    try:
        key = SealKey.from_hex(counts[SEAL_KEY_FIELD])
    except SealKeyError:
        return None, "the seal names no valid audit key"
    if not key.verifies(_seal_message(entry), counts[SIGNATURE_FIELD]):
        return None, "the seal's signature does not hold: the seal or an entry it covers " \
                     "was altered"
    return key, None


def _note_message(note: dict) -> bytes:
    return NOTE_DOMAIN + canonical_json({k: v for k, v in note.items() if k != SIGNATURE_FIELD})


def signed_note(run_id: str, base_head: str, files: list[dict],
                signer: SealSigner) -> dict:
    """A run's ``PUBLISHING`` note: the files it is about to move in (path and sha256),
    the log head it publishes onto, signed like a seal."""
    note = {"run_id": run_id, "base_head": base_head,
            "files": sorted(({"path": f["path"], "sha256": f["sha256"]} for f in files),
                            key=lambda f: f["path"]),
            SEAL_KEY_FIELD: signer.public.hex}
    note[SIGNATURE_FIELD] = signer.sign(_note_message(note))
    return note


def note_signer_key(note: object) -> SealKey | None:
    """The key that signed a ``PUBLISHING`` note, or None when it is not validly signed."""
    if not isinstance(note, dict) or not isinstance(note.get("files"), list):
        return None
    try:
        key = SealKey.from_hex(note.get(SEAL_KEY_FIELD))
    except SealKeyError:
        return None
    return key if key.verifies(_note_message(note), note.get(SIGNATURE_FIELD)) else None
