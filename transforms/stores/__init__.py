"""Adapters for storage: output folders on any Beam filesystem, latent shard files, the
segment cache, tombstones, the audit files of a run, and progress ticks."""
