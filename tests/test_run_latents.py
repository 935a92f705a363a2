"""``egoveil run`` with an image encoder, stored token grids and bfloat16 latents."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.errors import UserError
from pipeline.export.latent_dataset import LatentShardDataset, LatentShards
from pipeline.runner import prepare
from schemas.latents import SCHEMA_VERSION
from tests.cli import egoveil


@pytest.fixture(scope="module")
def token_run(tmp_path_factory, sample_video, key_file):
    video, _ = sample_video
    out = tmp_path_factory.mktemp("tokens") / "out"
    result = egoveil("run", "--input", video, "--output", str(out), "--key-file", key_file,
                     "--encoder", "random:dinov2-tiny", "--frames-per-clip", "2",
                     "--tokens", "--token-grid", "2x2x2", "--latent-dtype", "bfloat16",
                     "--batch-size", "4", "--device", "cpu", "--no-progress")
    assert result.returncode == 0, result.stderr
    return out


def test_run_stores_token_grids_and_the_encoder_in_the_metadata(token_run):
    shards = LatentShards(str(token_run))
    shards.verify()
    meta = shards.metadata
    assert meta["schema_version"] == SCHEMA_VERSION
    assert meta["encoder_id"] == "random:dinov2-tiny" and meta["encoder_pretrained"] is False
    assert "encoder_revision" in meta
    layout = shards.layout
    assert layout.dtype == "bfloat16" and layout.tokens_shape == (2, 2, 2, 48)
    record = json.loads((token_run / "audit" / "record.json").read_text())
    assert record["latents"]["tokens_shape"] == [2, 2, 2, 48]
    batches = list(LatentShardDataset(str(token_run), columns=["embedding", "tokens"],
                                      batch_size=3))
    rows = sum(len(b["embedding"]) for b in batches)
    assert rows == shards.num_rows >= 1
    assert batches[0]["tokens"].dtype == torch.bfloat16
    assert tuple(batches[0]["tokens"].shape[1:]) == (2, 2, 2, 48)
    assert torch.isfinite(batches[0]["tokens"].float()).all()


@pytest.mark.parametrize("args, message", [
    (["--token-grid", "3x3x3"], "--token-grid: token grid 3x3x3 must divide"),
    (["--token-grid", "4x4"], "--token-grid takes three positive sizes"),
    (["--resolution", "100"], "multiple of the encoder's patch size"),
    (["--latent-dtype", "float32"], None),
])
def test_bad_latent_options_get_one_line(args, message, tmp_path, sample_video, key_file,
                                         tiny_encoder):
    video, _ = sample_video
    argv = ["--input", video, "--output", str(tmp_path / "o"), "--key-file", key_file,
            "--encoder", tiny_encoder, *args]
    if message is None:  # argparse choices: exit 2 with the usage line
        with pytest.raises(SystemExit) as exc:
            prepare(argv)
        assert exc.value.code == 2
        return
    with pytest.raises(UserError) as exc:
        prepare(argv)
    assert message in str(exc.value) and "\n" not in str(exc.value)
