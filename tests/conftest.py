"""Shared fixtures: inputs the tests make themselves, and the evaluation media when present."""

from __future__ import annotations

import os

import pytest

from pipeline.samples import make_recording
from privacy.pseudonyms import PseudonymKey
from transforms.models.encoders import save_random_encoder
from transforms.stores.keys import load_key

SHARED_MEDIA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                            "media"))


def shared_media(*parts: str) -> str:
    """A path under ../shared/media; the calling test is skipped where it is absent."""
    path = os.path.join(SHARED_MEDIA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"evaluation media not present: {os.path.join(*parts)}")
    return path


@pytest.fixture(scope="session")
def key_file(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("key") / "pseudonym.key")
    PseudonymKey.create_file(path)
    return path


@pytest.fixture(scope="session")
def key(key_file) -> PseudonymKey:
    return load_key(key_file)


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch):
    monkeypatch.delenv("EGOVEIL_PSEUDONYM_KEY", raising=False)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A randomly initialised V-JEPA 2 saved with save_pretrained (no hub needed)."""
    return save_random_encoder(str(tmp_path_factory.mktemp("encoder") / "vjepa2-tiny"),
                               "vjepa2-tiny")


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory) -> tuple[str, list]:
    """A 2 s 640x360 recording with two real faces at known places, audio and metadata."""
    path = str(tmp_path_factory.mktemp("videos") / "walk.mp4")
    boxes = make_recording(path, seconds=2.0, fps=15)
    return path, boxes
