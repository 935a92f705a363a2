"""Keyed pseudonyms: HMAC-SHA256 under a secret kept outside the data (PRIVACY.md 10).

A key is 32 random bytes written as 64 hex characters, what ``egoveil keygen``
writes: 256 bits, so no list of likely keys can be tried against the pseudonyms.
Anything else (a passphrase, a short string, the consent CSV given by mistake) is
refused. Everything else the project keys derives from it with HKDF under its own
label: the published key id, the segment cache's MAC key and the Ed25519 audit key
that signs seals (``privacy.audit_seal``).

A ``PseudonymKey`` refuses to be pickled, so it can never travel inside a Beam
graph or a shard by accident: workers read the key themselves, in ``setup()``,
through ``transforms.stores.keys`` (this module reads no files).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privacy.audit_seal import SealSigner

KEY_ENV = "EGOVEIL_PSEUDONYM_KEY"
KEY_HEX = 64                # 32 bytes, as `egoveil keygen` writes them
MIN_KEY_BYTES = 16          # the constructor's floor, for secrets made in code
# 32 random bytes show fewer than 16 distinct values with probability about 4e-16; a
# key that does was typed or patterned ("aaaa...", "0123456789abcdef" repeated).
MIN_DISTINCT_BYTES = 16
PSEUDONYM_HEX = 32          # 128 bits
KEY_ID_HEX = 16
_KEY_TEXT = re.compile(rb"\s*([0-9a-fA-F]{64})\s*")
_MAKE_ONE = "make one with `egoveil keygen FILE`"


class PseudonymKeyError(ValueError):
    """The key is missing or unusable; the message never contains key material or paths."""


def key_file_mode_problem(mode: int) -> str | None:
    """Why a local key file's permission bits are unsafe, or None (OpenSSH's rule for
    private keys: no access at all for group or others)."""
    if mode & 0o077:
        return (f"the key file is open to group or others (mode {mode & 0o777:03o}); make it "
                "private with `chmod 600 FILE`")
    return None


class DerivedMac:
    """HMAC-SHA256 under a key derived for one purpose; never pickled."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def tag(self, *parts: bytes) -> str:
        """The MAC of ``parts``, each length-prefixed so that no two splits collide."""
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(len(part).to_bytes(8, "big") + part)
        return mac.hexdigest()

    def holds(self, tag: str, *parts: bytes) -> bool:
        return hmac.compare_digest(tag, self.tag(*parts))

    def __repr__(self) -> str:
        return "DerivedMac(<secret>)"

    def __reduce__(self):
        raise TypeError("a derived key is never serialized; derive it where it is used")


class PseudonymKey:
    """A secret for keyed pseudonyms, with a public key id.

    Use ``parse`` (or ``load``) for keys from outside: they check the format. The
    constructor takes a secret made in code (``generate``, tests).

    Args:
        secret: at least 16 bytes; for a key file, its 64 hex characters as written.
    """

    __slots__ = ("_secret", "key_id")

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes) or len(secret) < MIN_KEY_BYTES:
            raise PseudonymKeyError(f"a pseudonym key needs at least {MIN_KEY_BYTES} bytes")
        self._secret = secret
        # Derived under a label, never a plain hash of the key. Like any value computed
        # from the key (a pseudonym too), it would confirm a guessed key: what makes
        # guessing hopeless is the 256 random bits `parse` insists on.
        self.key_id = self._derive(b"key-id").hex()[:KEY_ID_HEX]

    @staticmethod
    def parse(data: bytes) -> PseudonymKey:
        """A key as ``egoveil keygen`` writes it: 64 hex characters (whitespace around them
        is ignored).

        Raises:
            PseudonymKeyError: any other content, or a patterned key.
        """
        match = _KEY_TEXT.fullmatch(data)
        if match is None:
            raise PseudonymKeyError(
                f"the pseudonym key is not in the format `egoveil keygen` writes (64 hex "
                f"characters of a random 256-bit key); {_MAKE_ONE}")
        text = match.group(1).lower()
        if len(set(bytes.fromhex(text.decode()))) < MIN_DISTINCT_BYTES:
            raise PseudonymKeyError(f"the pseudonym key is patterned, not random; {_MAKE_ONE}")
        # The HMAC secret is the key's text, as it always was: pseudonyms of existing
        # outputs stay the same.
        return PseudonymKey(text)

    @staticmethod
    def generate() -> PseudonymKey:
        return PseudonymKey(secrets.token_hex(32).encode())

    @staticmethod
    def create_file(path: str, overwrite: bool = False) -> PseudonymKey:
        """Write a new random key (64 hex characters) readable by its owner only."""
        text = secrets.token_hex(32).encode()
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)  # an overwritten file keeps its old mode
            handle.write(text + b"\n")
        return PseudonymKey.parse(text)

    @staticmethod
    def from_env() -> PseudonymKey | None:
        """The key in ``$EGOVEIL_PSEUDONYM_KEY`` (same format as a key file), or None."""
        value = os.environ.get(KEY_ENV)
        if not value:
            return None
        try:
            return PseudonymKey.parse(value.encode())
        except PseudonymKeyError as exc:
            raise PseudonymKeyError(f"${KEY_ENV}: {exc}") from None

    @staticmethod
    def load(path: str | None, read: Callable[[str], bytes]) -> PseudonymKey:
        """The key in the file at ``path`` or, without one, in ``$EGOVEIL_PSEUDONYM_KEY``.

        Args:
            path: a key file, or None.
            read: reads the file's bytes, refusing one that others can read
                (``transforms.stores.keys.read_key_file``); raises PseudonymKeyError.

        Raises:
            PseudonymKeyError: neither is available, or the key is unusable.
        """
        if path:
            return PseudonymKey.parse(read(path))
        key = PseudonymKey.from_env()
        if key is None:
            raise PseudonymKeyError(f"no pseudonym key: pass --key-file FILE or set ${KEY_ENV} "
                                    f"({_MAKE_ONE})")
        return key

    def _derive(self, label: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=b"egoveil/" + label).derive(self._secret)

    def pseudonym(self, namespace: str, value: str) -> str:
        """The keyed pseudonym of ``value`` in ``namespace`` (e.g. ``wearer``)."""
        mac = hmac.new(self._secret, f"{namespace}\x00{value}".encode(), hashlib.sha256)
        return mac.hexdigest()[:PSEUDONYM_HEX]

    def seed(self, *parts: object) -> int:
        """A deterministic seed that only the key holder can reproduce (redaction noise)."""
        mac = hmac.new(self._secret, "\x00".join(map(str, parts)).encode(), hashlib.sha256)
        return int.from_bytes(mac.digest()[:8], "little")

    def mac_for(self, purpose: str) -> DerivedMac:
        """A MAC key of its own for ``purpose`` (``segment-cache``): knowing it reveals
        neither the pseudonym key nor another purpose's key."""
        return DerivedMac(self._derive(b"mac/" + purpose.encode()))

    def seal_signer(self) -> SealSigner:
        """The Ed25519 key that signs this key holder's audit seals."""
        return SealSigner(self._derive(b"audit-seal-ed25519"))

    def __repr__(self) -> str:
        return f"PseudonymKey(key_id={self.key_id})"

    def __reduce__(self):
        raise TypeError("a PseudonymKey is never serialized; load it where it is used")
