"""``egoveil export``: WebDataset and Hugging Face datasets from a published output, the
dataset card, wearer-disjoint splits, filters, the Beam path, and ``--sync`` after an erasure.

The source is a synthetic output published through the real shard writer, publish
step, data contract and audit log (``pipeline.synthetic_output``), with real clip
videos; the end-to-end cycle on a real run is in ``test_identifiers_end_to_end``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import UserError
from pipeline.export.job import ExportRequest, export
from pipeline.export.lineage import EXPORT_FILE, Lineage, sync
from pipeline.synthetic_output import SyntheticSpec, publish_synthetic
from privacy.audit_summary import export_status
from privacy.audit_verify import verify_output
from privacy.export_card import redaction_classes
from privacy.export_policy import ExportFilter, ExportPolicyError, SplitSpec
from privacy.pseudonyms import PseudonymKey
from schemas.latents import LatentLayout, numpy_dtype
from tests.cli import egoveil
from transforms.stores.filesystems import FileSystemsStore

LAYOUT = LatentLayout(embedding_dim=16, dtype="float16", token_grid=(2, 2, 2), token_dim=8)
SPEC = SyntheticSpec(rows=40, wearers=8, no_wearer_every=7, layout=LAYOUT,
                     views=("rgb", "left"), unverified_every=6, distinct_clips=40,
                     target_shard_mb=0.002)
PASSED = ("verified", "reredacted_verified")


@pytest.fixture(autouse=True)
def _owner_key(monkeypatch, key_file):
    """Exports and syncs sign DIR's log with its owner's key; here from the environment."""
    with open(key_file) as handle:
        monkeypatch.setenv("EGOVEIL_PSEUDONYM_KEY", handle.read().strip())


@pytest.fixture(scope="module")
def published(tmp_path_factory, key_file) -> str:
    return publish_synthetic(str(tmp_path_factory.mktemp("source") / "out"), key_file, SPEC)


@pytest.fixture()
def source(published, tmp_path) -> str:
    """A copy of the published output (exports and erasures append to its log)."""
    out = tmp_path / "out"
    shutil.copytree(published, out)
    return str(out)


def _source_rows(out: str) -> dict[str, dict]:
    manifest = json.loads(open(os.path.join(out, "manifest.json")).read())
    tables = [pq.read_table(os.path.join(out, f["path"])) for f in manifest["files"]
              if f["kind"] == "latents"]
    return {r["clip_id"]: r for r in pa.concat_tables(tables).to_pylist()}


def _tar_samples(dest) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for path in sorted(dest.glob("*.tar")):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                assert member.isreg() and member.mtime == 0 and member.uid == member.gid == 0
                assert member.uname == member.gname == ""
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = archive.extractfile(member).read()
    return samples


def _wearer_of(rows: dict, clip_id: str) -> str:
    row = rows[clip_id]
    return row["wearer_id"] or "recording:" + row["recording_id"]


def test_webdataset_export_reads_back_with_tarfile_webdataset_and_a_dataloader(source, tmp_path,
                                                                               key):
    import torch
    import webdataset as wds

    dest = tmp_path / "wds"
    summary = export(source, ExportRequest(to="webdataset", dest=str(dest),
                                           split=SplitSpec.parse("train=0.7,val=0.3"),
                                           target_shard_mb=0.01))
    rows = _source_rows(source)
    passed = {c for c, r in rows.items() if r["qa_status"] in PASSED}
    samples = _tar_samples(dest)
    assert set(samples) == passed and summary.rows == len(passed)
    for clip_id, parts in samples.items():
        row = rows[clip_id]
        assert sorted(parts) == ["embedding.npy", "json", "mp4", "tokens.npy"]
        embedding = np.load(io.BytesIO(parts["embedding.npy"]))
        tokens = np.load(io.BytesIO(parts["tokens.npy"]))
        assert embedding.dtype == np.float16 and embedding.shape == (16,)
        assert tokens.dtype == np.float16 and tokens.shape == (2, 2, 2, 8)
        assert embedding.tobytes() == row["embedding"] and tokens.tobytes() == row["tokens"]
        meta = json.loads(parts["json"])
        assert "wearer_id" not in meta and "device_id" not in meta
        assert meta["latent_dtype"] == "float16"
        assert {k: meta[k] for k in ("clip_id", "view", "qa_status", "start_s", "frame_count")} \
            == {k: row[k] for k in ("clip_id", "view", "qa_status", "start_s", "frame_count")}
        assert parts["mp4"] == open(os.path.join(source, "clips", f"{clip_id}.mp4"), "rb").read()

    # No identity in two splits; every file is named by split, source shard and part.
    lineage = Lineage.parse((dest / EXPORT_FILE).read_bytes())
    by_split: dict[str, set] = {}
    for entry in lineage.files:
        assert entry["path"].startswith(f"{entry['split']}-")
        by_split.setdefault(entry["split"], set()).update(
            _wearer_of(rows, s["clip_id"]) for s in entry["samples"])
    assert set(by_split) == {"train", "val"} and not by_split["train"] & by_split["val"]

    urls = [str(p) for p in sorted(dest.glob("*.tar"))]
    decoded = list(wds.WebDataset(urls, shardshuffle=False).decode())
    assert {s["__key__"] for s in decoded} == passed
    assert all(s["embedding.npy"].shape == (16,) and s["json"]["clip_id"] == s["__key__"]
               for s in decoded)

    def to_tensors(sample):
        return torch.from_numpy(sample["embedding.npy"]), sample["json"]["clip_id"]

    loader = torch.utils.data.DataLoader(
        wds.WebDataset(urls, shardshuffle=False).decode().map(to_tensors).batched(4),
        batch_size=None, num_workers=2)
    seen = [c for embeddings, clips in loader for c in clips]
    assert sorted(seen) == sorted(passed)

    card = (dest / "README.md").read_text()
    assert card.startswith("---\nlicense: unknown\n") and "path: val-*.tar" in card
    for fact in ("centerface", "d" * 64, key.key_id, lineage.source["content_sha256"],
                 lineage.source["audit_head"], lineage.source["audit_entry"], "audio",
                 "Purpose `world-model-training`"):
        assert fact in card, fact


def test_the_same_export_gives_the_same_files_in_process_and_as_a_beam_job(source, tmp_path):
    local, beam = tmp_path / "local", tmp_path / "beam"
    args = {"to": "webdataset", "split": SplitSpec.parse("train=0.7,val=0.3"),
            "target_shard_mb": 0.01}
    first = export(source, ExportRequest(dest=str(local), engine="local", **args))
    second = export(source, ExportRequest(dest=str(beam), engine="beam", **args))
    assert (first.engine, second.engine) == ("local", "beam")
    names = sorted(p.name for p in local.glob("*.tar"))
    assert names == sorted(p.name for p in beam.glob("*.tar")) and len(names) > 4
    for name in names:
        assert (local / name).read_bytes() == (beam / name).read_bytes(), name
    assert verify_output(FileSystemsStore(source)).ok
    statuses = export_status(_entries(source))
    assert [s.export_id for s in statuses] == [first.export_id, second.export_id]


def _entries(out: str) -> list[dict]:
    from privacy.audit_chain import check_chain

    return check_chain(open(os.path.join(out, "audit", "events.jsonl"), "rb").read()).entries


def test_hf_export_loads_with_its_splits_and_declared_features(source, tmp_path):
    import datasets

    dest = tmp_path / "hf"
    export(source, ExportRequest(to="hf", dest=str(dest), split=SplitSpec.parse(
        "train=0.7,val=0.3"), license="cc-by-4.0", task_categories=("robotics",)))
    loaded = datasets.load_dataset(str(dest), cache_dir=str(tmp_path / "hf-cache"))
    rows = _source_rows(source)
    assert set(loaded) == {"train", "val"}
    features = loaded["train"].features
    assert features["embedding"] == datasets.List(datasets.Value("float16"), length=16)
    assert features["tokens"] == datasets.Array4D(shape=(2, 2, 2, 8), dtype="float16")
    assert features["mp4"] == datasets.Value("binary")
    assert "wearer_id" not in features and "device_id" not in features
    seen, wearers = set(), {}
    for split in ("train", "val"):
        for row in loaded[split]:
            source_row = rows[row["clip_id"]]
            assert np.asarray(row["embedding"], np.float16).tobytes() == source_row["embedding"]
            assert np.asarray(row["tokens"], np.float16).tobytes() == source_row["tokens"]
            assert row["mp4"] == open(os.path.join(source, "clips", f"{row['clip_id']}.mp4"),
                                      "rb").read()
            seen.add(row["clip_id"])
            wearers.setdefault(split, set()).add(_wearer_of(rows, row["clip_id"]))
    assert seen == {c for c, r in rows.items() if r["qa_status"] in PASSED}
    assert not wearers["train"] & wearers["val"]
    card = (dest / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "- robotics" in card and "array4_d" in card


def test_bfloat16_latents_keep_their_values(tmp_path, key_file):
    import datasets
    import ml_dtypes

    layout = LatentLayout(embedding_dim=8, dtype="bfloat16", token_grid=(1, 2, 2), token_dim=4)
    out = publish_synthetic(str(tmp_path / "out"), key_file, SyntheticSpec(
        rows=6, wearers=2, layout=layout, clips=False))
    rows = _source_rows(out)
    export(out, ExportRequest(to="webdataset", dest=str(tmp_path / "wds")))
    export(out, ExportRequest(to="hf", dest=str(tmp_path / "hf")))
    for clip_id, parts in _tar_samples(tmp_path / "wds").items():
        assert "mp4" not in parts and json.loads(parts["json"])["latent_dtype"] == "bfloat16"
        tokens = np.load(io.BytesIO(parts["tokens.npy"]))
        assert tokens.dtype == np.dtype("<u2") and tokens.shape == (1, 2, 2, 4)
        assert tokens.view(ml_dtypes.bfloat16).tobytes() == rows[clip_id]["tokens"]
    loaded = datasets.load_dataset(str(tmp_path / "hf"), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert loaded.features["embedding"] == datasets.List(datasets.Value("float32"), length=8)
    for row in loaded:
        exact = np.frombuffer(rows[row["clip_id"]]["embedding"], numpy_dtype("bfloat16"))
        assert np.array_equal(np.asarray(row["embedding"], np.float32), exact.astype(np.float32))


def test_filters_and_columns(source, tmp_path):
    rows = _source_rows(source)
    dest = tmp_path / "left"
    export(source, ExportRequest(to="webdataset", dest=str(dest), clips=False,
                                 filter=ExportFilter.from_options(
                                     qa_status="verified,redacted_unverified", view="left",
                                     min_frames=10, time_range="4:30",
                                     columns="clip_id,embedding,view,wearer_id",
                                     keep_pseudonyms=True)))
    expected = {c for c, r in rows.items() if r["qa_status"] != "reredacted_verified"
                and r["view"] == "left" and r["frame_count"] >= 10 and r["start_s"] >= 4
                and r["end_s"] <= 30}
    samples = _tar_samples(dest)
    assert set(samples) == expected and expected
    for clip_id, parts in samples.items():
        assert sorted(parts) == ["embedding.npy", "json"]
        assert sorted(json.loads(parts["json"])) == ["clip_id", "latent_dtype", "view",
                                                     "wearer_id"]
        assert json.loads(parts["json"])["wearer_id"] == rows[clip_id]["wearer_id"]


@pytest.mark.parametrize("request_args, message", [
    ({"filter": ExportFilter.from_options(columns="clip_id,nonsense")},
     "the shards have no column 'nonsense'"),
    ({"filter": ExportFilter.from_options(view="side-left")}, "no row of DIR passes"),
    ({"split": SplitSpec.parse("train=0.999999999,val=0.000000001")},
     "--split cannot be satisfied: no wearer falls in 'val'"),
])
def test_exports_that_cannot_be_made_say_why_and_write_nothing(source, tmp_path, request_args,
                                                               message):
    dest = tmp_path / "dest"
    with pytest.raises(UserError, match=message):
        export(source, ExportRequest(to="webdataset", dest=str(dest), **request_args))
    assert not dest.exists() or not any(dest.iterdir())
    assert export_status(_entries(source)) == []


def test_an_output_that_does_not_verify_is_not_exported(source, tmp_path):
    shard = sorted(os.listdir(os.path.join(source, "latents")))[0]
    path = os.path.join(source, "latents", shard)
    data = bytearray(open(path, "rb").read())
    data[100] ^= 1
    open(path, "wb").write(bytes(data))
    dest = tmp_path / "dest"
    with pytest.raises(UserError, match=f"DIR does not verify \\(latents/{shard}: sha256"):
        export(source, ExportRequest(to="hf", dest=str(dest)))
    assert not dest.exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_bytes(b"")
    with pytest.raises(UserError, match="DEST is not empty"):
        export(source, ExportRequest(to="hf", dest=str(tmp_path / "full")))
    with pytest.raises(UserError, match="DEST must be outside DIR"):
        export(source, ExportRequest(to="hf", dest=os.path.join(source, "export")))


def _flip(path: str, offset: int) -> None:
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 1
    open(path, "wb").write(bytes(data))


def _manifest_paths(out: str, kind: str) -> list[str]:
    manifest = json.loads(open(os.path.join(out, "manifest.json")).read())
    return sorted(f["path"] for f in manifest["files"] if f["kind"] == kind)


@pytest.mark.parametrize("to", ["webdataset", "hf"])
def test_a_shard_altered_where_only_its_hash_shows_it_stops_the_export(source, tmp_path, to):
    """A token value flipped in an exported shard parses as well as the true one: the
    export reads and writes the shard's rows, finds its digest wrong at the end of the
    shard, refuses, records nothing and removes what it wrote."""
    rows = _source_rows(source)
    shard = next(p for p in _manifest_paths(source, "latents")
                 if any(r["qa_status"] in PASSED
                        for r in pq.read_table(os.path.join(source, p)).to_pylist()))
    path = os.path.join(source, shard)
    meta = pq.read_metadata(path)
    column = meta.row_group(meta.num_row_groups - 1).column(
        meta.schema.to_arrow_schema().get_field_index("tokens"))
    _flip(path, column.data_page_offset + column.total_compressed_size - 3)
    assert pq.read_table(path).num_rows == meta.num_rows  # still parses
    dest = tmp_path / "dest"
    with pytest.raises(UserError, match=f"DIR does not verify \\({shard}: sha256 differs"):
        export(source, ExportRequest(to=to, dest=str(dest)))
    assert not dest.exists()
    assert export_status(_entries(source)) == [] and rows


def test_an_altered_clip_stops_the_export_whether_it_is_exported_or_not(source, tmp_path):
    rows = _source_rows(source)
    exported = next(c for c, r in rows.items() if r["qa_status"] in PASSED)
    left_out = next(c for c, r in rows.items() if r["qa_status"] not in PASSED)
    for number, clip_id in enumerate((exported, left_out)):
        path = os.path.join(source, "clips", f"{clip_id}.mp4")
        true_bytes = open(path, "rb").read()
        _flip(path, len(true_bytes) // 2)
        dest = tmp_path / f"dest-{number}"
        with pytest.raises(UserError, match=f"DIR does not verify \\(clips/{clip_id}.mp4: "
                                            "sha256 differs"):
            export(source, ExportRequest(to="webdataset", dest=str(dest)))
        assert not dest.exists()
        open(path, "wb").write(true_bytes)
    assert export_status(_entries(source)) == []
    assert export(source, ExportRequest(to="webdataset", dest=str(tmp_path / "ok"))).rows


def test_rows_that_are_not_the_planned_ones_stop_the_export(source, tmp_path):
    """The plan reads the shards' small columns before they are hashed; the rows the
    hashed bytes pick must be the ones it planned (else the shard changed in between)."""
    from pipeline.export.job import configure, export_shard
    from pipeline.export.source import open_source

    opened = open_source(source, content_on_read=True)
    cfg, tasks = configure(opened, ExportRequest(to="webdataset", dest=str(tmp_path / "d")))
    task = tasks[0]
    task.rows, task.splits = task.rows[1:], task.splits[1:]  # as a plan of other bytes
    with pytest.raises(UserError, match="DIR changed while it was being exported"):
        export_shard(cfg, task)


def test_hashing_beside_the_writer_gives_hashlib_digests():
    from pipeline.export.hashing import HashThread

    rng = np.random.default_rng(0)
    pieces = [rng.bytes(n) for n in (0, 1, 511, 70_000, 3, 64 * 1024, 2 * 1024**2)] \
        + [rng.bytes(6 * 1024**2)] * 15  # more than the backlog: the writer waits
    expected = [hashlib.sha256(), hashlib.sha256()]
    with HashThread() as thread:
        digests = [thread.sha256(), thread.sha256()]
        for number, piece in enumerate(pieces):
            for digest in (digests[number % 2], expected[number % 2]):
                digest.update(memoryview(piece) if number % 3 else piece)
        assert [d.hexdigest() for d in digests] == [d.hexdigest() for d in expected]
        digests[0].update(b"more")
        expected[0].update(b"more")
        assert digests[0].hexdigest() == expected[0].hexdigest()


def test_policy_values_are_checked():
    for text, message in (("train=0.9", "add up to 1"), ("train=0.5,train=0.5", "twice"),
                          ("Train=1", "not a split name"), ("train", "NAME=SHARE"),
                          ("train=x", "NAME=SHARE"), ("train=1.5,val=-0.5", "must be in")):
        with pytest.raises(ExportPolicyError, match=message):
            SplitSpec.parse(text)
    with pytest.raises(ExportPolicyError, match="--keep-pseudonyms"):
        ExportFilter.from_options(columns="clip_id,device_id")
    with pytest.raises(ExportPolicyError, match="--qa-status"):
        ExportFilter.from_options(qa_status="great")
    with pytest.raises(ExportPolicyError, match="END must be after START"):
        ExportFilter.from_options(time_range="5:1")


def test_splits_follow_the_shares_and_keep_each_identity_where_it_was():
    spec = SplitSpec.parse("train=0.8,val=0.1,test=0.1")
    key = PseudonymKey.generate()
    ids = [key.pseudonym("wearer", f"w{i}") for i in range(20000)]
    first = {i: spec.split_of(i) for i in ids}
    shares = {name: sum(s == name for s in first.values()) / len(ids) for name in spec.names}
    assert abs(shares["train"] - 0.8) < 0.01 and abs(shares["val"] - 0.1) < 0.01
    # Adding identities never moves one; another seed gives another assignment.
    assert all(spec.split_of(i) == first[i] for i in ids[:1000])
    reseeded = SplitSpec(spec.shares, seed="other")
    assert sum(reseeded.split_of(i) != first[i] for i in ids[:1000]) > 100


def test_card_lists_every_redaction_class_the_record_names():
    record = {"detector": {"name": "centerface", "threshold": 0.1, "weights_sha256": "a" * 64},
              "anonymization": {"detector": "centerface:threshold=0.1"}}
    assert [c["class"] for c in redaction_classes(record)] == ["face"]
    record["classes"] = {
        "face": {"detector": {"name": "centerface", "threshold": 0.1,
                              "weights_sha256": "a" * 64}},
        "plate": {"detector": {"name": "ensemble", "members": [
            {"name": "fastanpr", "conf_threshold": 0.3, "weights_sha256": "b" * 64},
            {"name": "ppocr", "box_thresh": 0.5, "weights_sha256": "c" * 64}]},
            "mask_scale": 1.2}}
    classes = {c["class"]: c for c in redaction_classes(record)}
    assert set(classes) == {"face", "plate"}
    plate = classes["plate"]["detector"]
    assert plate["weights_sha256"] == ["b" * 64, "c" * 64]
    assert plate["members"][0]["thresholds"] == {"conf_threshold": 0.3}
    assert classes["plate"]["settings"] == {"mask_scale": 1.2}


def _bytes_under(folder) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()]


def test_sync_removes_an_erased_wearers_rows_from_both_formats(source, tmp_path, key,
                                                               key_file):
    from pipeline.audit_report import build_report, render_text
    from pipeline.erase import erase

    wds, hf = tmp_path / "wds", tmp_path / "hf"
    split = SplitSpec.parse("train=0.7,val=0.3")
    export(source, ExportRequest(to="webdataset", dest=str(wds), split=split,
                                 target_shard_mb=0.01))
    export(source, ExportRequest(to="hf", dest=str(hf), split=split))
    rows = _source_rows(source)
    wearer = key.pseudonym("wearer", "wearer-1")
    erased = [r for r in rows.values() if r["wearer_id"] == wearer and r["qa_status"] in PASSED]
    marks = [r["clip_id"].encode() for r in erased] + [r["embedding"] for r in erased] \
        + [r["tokens"] for r in erased] + [r["recording_id"].encode() for r in erased] \
        + [open(os.path.join(source, "clips", f"{r['clip_id']}.mp4"), "rb").read()
           for r in erased]
    assert erased and all(any(m in data for data in _bytes_under(wds)) for m in marks)
    assert all(any(m in data for data in _bytes_under(hf)) for m in marks)
    before = {p.name: p.read_bytes() for p in wds.glob("*.tar")}

    erase(source, ["wearer-1"], [], key_file)
    report = render_text(build_report(FileSystemsStore(source), thumbnails=0))
    assert report.count("OUT OF SYNC, 1 erasure(s) since") == 2

    for dest in (wds, hf):
        rows_before = Lineage.parse((dest / EXPORT_FILE).read_bytes()).rows
        summary = sync(source, str(dest))
        assert summary.rows_removed == len(erased) and summary.files_rewritten >= 1
        assert not any(m in data for m in marks for data in _bytes_under(dest))
        lineage = Lineage.parse((dest / EXPORT_FILE).read_bytes())
        assert lineage.rows == rows_before - len(erased)
        assert len(lineage.erasures_applied) == 1 and lineage.pending is None
        for entry in lineage.files:
            data = (dest / entry["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        card = (dest / "README.md").read_text()
        assert lineage.erasures_applied[0] in card and "| yes |" in card
        assert sync(source, str(dest)).in_sync_already
    after = {p.name: p.read_bytes() for p in wds.glob("*.tar")}
    changed = {n for n in before if before[n] != after[n]}
    assert 0 < len(changed) < len(before)  # only the files that held the rows
    assert verify_output(FileSystemsStore(source)).ok
    assert "in sync; " in render_text(build_report(FileSystemsStore(source), thumbnails=0))
    kinds = [e["kind"] for e in _entries(source)]
    assert kinds.count("export") == 2 and kinds.count("export_synced") == 2


def test_a_sync_cut_short_is_finished_by_the_next(source, tmp_path, key_file):
    from pipeline.erase import erase

    dest = tmp_path / "wds"
    export(source, ExportRequest(to="webdataset", dest=str(dest), target_shard_mb=0.01))
    old = Lineage.parse((dest / EXPORT_FILE).read_bytes())
    erase(source, ["wearer-2"], [], key_file)
    first = sync(source, str(dest))
    done = Lineage.parse((dest / EXPORT_FILE).read_bytes())
    # As if killed after rewriting the files, before the lineage was written.
    old.pending = {f["path"]: f["sha256"] for f in done.files}
    (dest / EXPORT_FILE).write_bytes(old.to_bytes())
    again = sync(source, str(dest))
    assert again.rows_removed == first.rows_removed > 0
    final = Lineage.parse((dest / EXPORT_FILE).read_bytes())
    assert [f["sha256"] for f in final.files] == [f["sha256"] for f in done.files]
    assert final.pending is None
    (dest / final.files[0]["path"]).write_bytes(b"altered")
    with pytest.raises(UserError, match="does not match egoveil-export.json"):
        sync(source, str(dest))
    with pytest.raises(UserError, match="is not the output DEST was exported from"):
        other = publish_synthetic(str(tmp_path / "other"), key_file, SyntheticSpec(rows=2,
                                                                              clips=False))
        sync(other, str(dest))


def test_the_command_exports_and_says_what_it_did(source, tmp_path, key_file, monkeypatch):
    monkeypatch.delenv("EGOVEIL_PSEUDONYM_KEY")
    dest = tmp_path / "cli"
    result = egoveil("export", source, "--to", "webdataset", str(dest), "--split",
                     "train=0.7,val=0.3", "--direct_num_workers", "1", "--key-file", key_file)
    assert result.returncode == 0, result.stderr
    assert "rows in" in result.stderr and "recorded in DIR's audit log" in result.stderr
    assert source not in result.stderr and str(dest) not in result.stderr
    for args, message in (
            (["export", source, str(dest)], "give DIR, --to webdataset|hf and DEST"),
            (["export", "--sync", str(dest)], "--sync takes the source and the export"),
            (["export", source, "--to", "hf", str(tmp_path / "x"), "--frobnicate"],
             "unknown option --frobnicate"),
            (["export", source, "--to", "hf", str(tmp_path / "x"), "--split", "a=2"],
             "--split: the share of a must be in"),
            (["export", source, "--to", "webdataset", str(dest)], "DEST is not empty"),
            (["export", source, "--to", "webdataset", str(tmp_path / "y")],
             "no pseudonym key: pass --key-file")):
        failed = egoveil(*args)
        lines = [line for line in failed.stderr.splitlines()
                 if line.startswith("egoveil: error:")]
        assert failed.returncode == 2 and len(lines) == 1 and message in lines[0], failed.stderr
        assert "Traceback" not in failed.stderr and str(tmp_path) not in lines[0]


def test_a_remote_source_and_destination_go_through_beam_filesystems(source, tmp_path, key,
                                                                     key_file):
    """DIR and DEST as URIs of a filesystem with a scheme: export both ways, erase, sync."""
    from pipeline.erase import erase
    from tests.object_store import uri

    wds, beam = tmp_path / "wds", tmp_path / "beam"
    split = SplitSpec.parse("train=0.7,val=0.3")
    first = export(uri(source), ExportRequest(to="webdataset", dest=uri(wds), split=split,
                                              target_shard_mb=0.01))
    export(uri(source), ExportRequest(to="webdataset", dest=uri(beam), split=split,
                                      target_shard_mb=0.01, engine="beam"))
    assert first.rows == len(_tar_samples(wds)) > 0
    assert {p.name: p.read_bytes() for p in wds.glob("*.tar")} == \
        {p.name: p.read_bytes() for p in beam.glob("*.tar")}
    erase(uri(source), ["wearer-3"], [], key_file)
    summary = sync(uri(source), uri(wds))
    assert summary.rows_removed > 0
    wearer = key.pseudonym("wearer", "wearer-3")
    rows = _source_rows(source)
    assert all(r["wearer_id"] != wearer for c, r in rows.items())
    assert not any(c.encode() in data for c in _tar_samples(beam) if c not in rows
                   for data in _bytes_under(wds))
    assert verify_output(FileSystemsStore(source)).ok


def test_only_the_owners_key_records_an_export(source, tmp_path, monkeypatch):
    other = tmp_path / "other.key"
    PseudonymKey.create_file(str(other))
    monkeypatch.delenv("EGOVEIL_PSEUDONYM_KEY")
    dest = tmp_path / "dest"
    with pytest.raises(UserError, match="is not the key DIR was written with"):
        export(source, ExportRequest(to="webdataset", dest=str(dest), key_file=str(other)))
    assert export_status(_entries(source)) == [] and not dest.exists()
