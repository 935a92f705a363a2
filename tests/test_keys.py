"""Pseudonym keys: only random keygen keys, only private files, ids that are not hashes of
the key, and key material that never travels (PRIVACY.md 10)."""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import subprocess
import sys

import pytest

from pipeline.cli import main
from privacy.audit_seal import SealKey
from privacy.pseudonyms import KEY_ENV, PseudonymKey, PseudonymKeyError
from transforms.stores.keys import load_key

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _private_file(path, data: bytes) -> str:
    path.write_bytes(data)
    path.chmod(0o600)
    return str(path)


def test_keys_refuse_to_travel_and_to_be_short(tmp_path):
    with pytest.raises(TypeError):
        pickle.dumps(PseudonymKey(b"k" * 32))
    with pytest.raises(TypeError):
        pickle.dumps(PseudonymKey.generate().mac_for("segment-cache"))
    with pytest.raises(PseudonymKeyError):
        PseudonymKey(b"short")
    path = tmp_path / "k"
    key = PseudonymKey.create_file(str(path))
    assert (path.stat().st_mode & 0o777) == 0o600
    assert load_key(str(path)).key_id == key.key_id
    with pytest.raises(FileExistsError):
        PseudonymKey.create_file(str(path))
    with pytest.raises(PseudonymKeyError, match="no pseudonym key"):
        load_key(None)


WEAK = {
    "sixteen letters": b"aaaaaaaaaaaaaaaa\n",
    "a consent registry": b"wearer_id,purpose,granted_at,withdrawn_at\n"
                          b"alice,world-model-training,2026-01-01T00:00:00Z,\n",
    "a passphrase": b"correct horse battery staple, correct horse battery staple!!!!!!\n",
    "63 hex characters": b"f" * 63 + b"\n",
    "one hex digit 64 times": b"a" * 64 + b"\n",
    "a repeated pattern": b"0123456789abcdef" * 4 + b"\n",
    "two keys": (b"ab" * 32 + b"\n") * 2,
}


@pytest.mark.parametrize("content", list(WEAK))
def test_a_key_that_is_not_a_random_keygen_key_is_refused(content, tmp_path, monkeypatch):
    path = _private_file(tmp_path / "weak.key", WEAK[content])
    with pytest.raises(PseudonymKeyError, match="egoveil keygen") as exc:
        load_key(path)
    monkeypatch.setenv(KEY_ENV, WEAK[content].decode())
    with pytest.raises(PseudonymKeyError, match=rf"\${KEY_ENV}: ") as from_env:
        load_key(None)
    for message in (str(exc.value), str(from_env.value)):
        assert "alice" not in message and str(tmp_path) not in message


def test_egoveil_run_refuses_a_weak_key_in_one_line(tmp_path, capsys):
    path = _private_file(tmp_path / "weak.key", b"aaaaaaaaaaaaaaaa\n")
    code = main(["run", "--input", str(tmp_path), "--output", str(tmp_path / "out"),
                 "--key-file", path])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("egoveil: error:")]
    assert len(lines) == 1 and "not in the format `egoveil keygen` writes" in lines[0]
    assert "aaaa" not in err and str(tmp_path) not in err


def test_a_key_file_others_can_open_is_refused(tmp_path):
    path = tmp_path / "k"
    PseudonymKey.create_file(str(path))
    for mode in (0o644, 0o640, 0o604, 0o660):
        path.chmod(mode)
        with pytest.raises(PseudonymKeyError, match=rf"mode {mode:03o}.*chmod 600"):
            load_key(str(path))
    path.chmod(0o400)
    assert load_key(str(path)).key_id
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(PseudonymKeyError, match="not a regular file"):
        load_key(str(fifo))  # never opened: opening a FIFO would wait for a writer


def test_the_keygen_format_is_read_as_before_and_the_key_id_is_no_hash_of_it(tmp_path):
    text = os.urandom(32).hex().encode()
    key = load_key(_private_file(tmp_path / "k", text + b"\n"))
    # Pseudonyms of outputs written before stay the same: HMAC-SHA256 under the key's text.
    assert key.pseudonym("wearer", "alice") == hmac.new(
        text, b"wearer\x00alice", hashlib.sha256).hexdigest()[:32]
    assert load_key(_private_file(tmp_path / "upper", b"  " + text.upper() + b"\r\n")) \
        .pseudonym("wearer", "alice") == key.pseudonym("wearer", "alice")
    # The id was sha256("egoveil-key-id\0" + key); now it is derived with HKDF under a label,
    # like the cache's MAC key and the audit key, each of its own.
    assert key.key_id != hashlib.sha256(b"egoveil-key-id\x00" + text).hexdigest()[:16]
    assert len(key.key_id) == 16 and key.key_id not in hashlib.sha256(text).hexdigest()
    mac = key.mac_for("segment-cache")
    assert mac.tag(b"x") != key.mac_for("other").tag(b"x") and mac.holds(mac.tag(b"x"), b"x")
    assert key.seal_signer().public != PseudonymKey.generate().seal_signer().public


def test_keygen_writes_the_key_and_its_public_audit_key(tmp_path, capsys):
    path = tmp_path / "egoveil.key"
    assert main(["keygen", str(path)]) == 0
    key = load_key(str(path))
    public = SealKey.from_pem((tmp_path / "egoveil.key.pub").read_bytes())
    assert public == key.seal_signer().public
    err = capsys.readouterr().err
    assert key.key_id in err and public.fingerprint in err
    assert path.read_text().strip() not in err
    assert main(["keygen", str(path)]) == 2  # never overwrites
    (tmp_path / "egoveil.key.pub").unlink()
    assert main(["keygen", "--public", str(path)]) == 0
    assert SealKey.from_pem((tmp_path / "egoveil.key.pub").read_bytes()) == public
    assert load_key(str(path)).key_id == key.key_id


def test_the_privacy_package_reads_keys_without_beam(tmp_path):
    """privacy/ decides and never imports Beam: the key's bytes come from a reader."""
    path = tmp_path / "k"
    PseudonymKey.create_file(str(path))
    code = f"""
import sys
from privacy.pseudonyms import PseudonymKey
import privacy.audit_log, privacy.audit_verify, privacy.audit_seal
key = PseudonymKey.load({str(path)!r}, lambda p: open(p, "rb").read())
key.seal_signer().sign(b"x"); key.mac_for("segment-cache").tag(b"x")
assert "apache_beam" not in sys.modules, "privacy imported apache_beam"
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
