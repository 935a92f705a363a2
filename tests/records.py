"""A record of processing as ``pipeline.runner.prepare`` builds it, for tests that publish
shards they write themselves (the data contract checks the record before publishing)."""

from __future__ import annotations


def run_record(key_id: str = "fedcba9876543210", *, embedding_dim: int = 4,
               encoder_id: str = "random:test", **extra) -> dict:
    """The fields the publish step and its data contract need, for a test encoder."""
    record = {
        "run_id": "0123456789abcdef", "purpose": "world-model-training",
        "consent_checked": False, "key_id": key_id, "config_sha256": "c" * 64,
        "started_at": "2026-05-01T10:00:00+00:00", "runner": "DirectRunner",
        "anonymization": {"detector": "centerface",
                          "redaction": {"mode": "solid", "mask_scale": 1.4}},
        "detector": {"name": "centerface", "threshold": 0.2, "weights_sha256": "d" * 64},
        "encoder": {"encoder_id": encoder_id, "pretrained": False,
                    "embedding_dim": embedding_dim, "weights_sha256": None},
    }
    record.update(extra)
    return record
