"""Keyed pseudonyms: HMAC-SHA256 under a secret kept outside the data (PRIVACY.md 9).

A ``PseudonymKey`` refuses to be pickled, so it can never travel inside a Beam
graph or a shard by accident: workers read the key themselves, in ``setup()``,
from the key file or the environment.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

KEY_ENV = "EGOVEIL_PSEUDONYM_KEY"
MIN_KEY_BYTES = 16
PSEUDONYM_HEX = 32  # 128 bits


class PseudonymKeyError(ValueError):
    """The key is missing or unusable; the message never contains key material."""


class PseudonymKey:
    """A secret for keyed pseudonyms, with a public key id.

    Args:
        secret: at least 16 bytes.
    """

    __slots__ = ("_secret", "key_id")

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes) or len(secret) < MIN_KEY_BYTES:
            raise PseudonymKeyError(f"a pseudonym key needs at least {MIN_KEY_BYTES} bytes")
        self._secret = secret
        self.key_id = hashlib.sha256(b"egoveil-key-id\x00" + secret).hexdigest()[:16]

    @staticmethod
    def generate() -> PseudonymKey:
        return PseudonymKey(secrets.token_bytes(32))

    @staticmethod
    def create_file(path: str, overwrite: bool = False) -> PseudonymKey:
        """Write a new random key (64 hex characters) readable by its owner only."""
        secret = secrets.token_hex(32).encode()
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret + b"\n")
        return PseudonymKey(secret)

    @staticmethod
    def from_file(path: str) -> PseudonymKey:
        """Read a key file (any bytes; surrounding whitespace ignored)."""
        from apache_beam.io.filesystems import FileSystems

        try:
            with FileSystems.open(path, compression_type="uncompressed") as handle:
                secret = handle.read().strip()
        except Exception as exc:  # noqa: BLE001 - any failure is "cannot read the key"
            raise PseudonymKeyError(f"cannot read the key file ({type(exc).__name__})") from None
        return PseudonymKey(secret)

    @staticmethod
    def from_env() -> PseudonymKey | None:
        value = os.environ.get(KEY_ENV)
        return PseudonymKey(value.encode()) if value else None

    @staticmethod
    def load(path: str | None) -> PseudonymKey:
        """The key from ``path`` or, without one, from ``$EGOVEIL_PSEUDONYM_KEY``.

        Raises:
            PseudonymKeyError: neither is available or the key is too short.
        """
        if path:
            return PseudonymKey.from_file(path)
        key = PseudonymKey.from_env()
        if key is None:
            raise PseudonymKeyError(f"no pseudonym key: pass --key-file FILE or set ${KEY_ENV} "
                            "(make one with `egoveil keygen FILE`)")
        return key

    def pseudonym(self, namespace: str, value: str) -> str:
        """The keyed pseudonym of ``value`` in ``namespace`` (e.g. ``wearer``)."""
        mac = hmac.new(self._secret, f"{namespace}\x00{value}".encode(), hashlib.sha256)
        return mac.hexdigest()[:PSEUDONYM_HEX]

    def seed(self, *parts: object) -> int:
        """A deterministic seed that only the key holder can reproduce (redaction noise)."""
        mac = hmac.new(self._secret, "\x00".join(map(str, parts)).encode(), hashlib.sha256)
        return int.from_bytes(mac.digest()[:8], "little")

    def __repr__(self) -> str:
        return f"PseudonymKey(key_id={self.key_id})"

    def __reduce__(self):
        raise TypeError("a PseudonymKey is never serialized; load it where it is used")
