"""A published run's fingerprint: every shard row (latents as sha256 prefixes) and clip file.

Two runs of the same inputs, key, encoder and configuration publish the same rows and
clips exactly when their fingerprints are equal; used to show that a refactoring
changed no output (issue 13: the demo inputs and ../shared/media/videos, run with a
fixed key and a saved tiny encoder, before and after).

    python bench/run_fingerprint.py DIR > fingerprint.json
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import pyarrow.parquet as pq


def fingerprint(out: str) -> dict:
    with open(os.path.join(out, "manifest.json")) as handle:
        manifest = json.load(handle)
    rows = []
    for entry in manifest["files"]:
        if entry["kind"] != "latents":
            continue
        table = pq.read_table(os.path.join(out, entry["path"])).to_pydict()
        for i in range(len(next(iter(table.values())))):
            rows.append({k: hashlib.sha256(v[i]).hexdigest()[:16] if isinstance(v[i], bytes)
                         else v[i] for k, v in table.items()})
    rows.sort(key=lambda r: r["clip_id"])
    clips = sorted(f"{f['path']}:{f['sha256'][:16]}" for f in manifest["files"]
                   if f["kind"] == "clip")
    return {"rows": rows, "clips": clips, "totals": manifest["totals"]}


if __name__ == "__main__":
    json.dump(fingerprint(sys.argv[1]), sys.stdout, indent=1, sort_keys=True)
