"""The dataset card (``DEST/README.md``) of an export, for both formats.

The YAML header is the Hugging Face Hub's (``huggingface_hub.DatasetCardData``):
licence, task categories, size category, the ``configs`` that name each split's
files and, for ``hf``, ``dataset_info`` with the declared features (``datasets``'
own YAML). The body's privacy section states only facts read from the source's
record of processing, audit log and manifest (``privacy.export_card``), laid out
by ``templates/dataset_card.md.j2``; the lineage adds what this export holds.
"""

from __future__ import annotations

import functools
import os

import jinja2

from privacy.export_card import privacy_facts

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "templates")

# The Hub's size categories, by number of rows.
_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
          (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"),
          (1_000_000_000, "100M<n<1B"))


def size_category(rows: int) -> str:
    for limit, name in _SIZES:
        if rows < limit:
            return name
    return "n>1B"


def _data_files(lineage) -> list[dict]:
    from pipeline.export import hf, webdataset

    if lineage.to == "webdataset":
        pattern = "{split}-*" + webdataset.EXTENSION
    else:
        pattern = hf.DATA_DIR + "/{split}-*" + hf.EXTENSION
    return [{"split": name, "path": pattern.format(split=name)} for name in lineage.splits]


def card_data(lineage, features=None):
    """The card's YAML metadata as ``huggingface_hub.DatasetCardData``."""
    from huggingface_hub import DatasetCardData

    selection = lineage.selection
    data = DatasetCardData(
        license=selection.get("license") or "unknown",
        task_categories=list(selection.get("task_categories") or []),
        size_categories=[size_category(lineage.rows)],
        tags=["egoveil", "egocentric-video", "world-model", "latents", "anonymized"],
        pretty_name=selection.get("name") or None,
        configs=[{"config_name": "default", "data_files": _data_files(lineage)}])
    if features is not None:
        import datasets
        from datasets.info import DatasetInfo, DatasetInfosDict
        from datasets.splits import SplitDict, SplitInfo

        splits = SplitDict()
        for name, split in lineage.splits.items():
            splits.add(SplitInfo(name=name, num_bytes=split.get("arrow_bytes", 0),
                                 num_examples=split["rows"]))
        info = DatasetInfo(features=datasets.Features(features), splits=splits,
                           download_size=sum(s["bytes"] for s in lineage.splits.values()),
                           dataset_size=sum(s.get("arrow_bytes", 0)
                                            for s in lineage.splits.values()))
        DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    return data


def _features(source, lineage):
    if lineage.to != "hf":
        return None
    from pipeline.export import hf
    from schemas.latents import LatentLayout

    schema, layout = source.schema_and_layout()
    return hf.features(schema, lineage.columns, LatentLayout.from_metadata(
        {"embedding_dim": lineage.layout["embedding_dim"],
         "embedding_dtype": lineage.layout["dtype"],
         "tokens": {"shape": lineage.layout["tokens_shape"]}
         if lineage.layout.get("tokens_shape") else None}),
        lineage.selection.get("clips", False))


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template("dataset_card.md.j2")


def prepare() -> None:
    """Import and compile what the card needs (about 0.1 s), so that an export can do it
    while its files are being written rather than after. A failure here is met again,
    and reported, when the card is written."""
    try:
        from huggingface_hub import DatasetCardData  # noqa: F401

        _template()
    except Exception:  # noqa: BLE001 - see above
        pass


def render_card(source, lineage) -> str:
    """The whole ``README.md``: YAML header, contents, privacy, provenance, how to load."""
    features = _features(source, lineage)
    body = _template().render(
        facts=privacy_facts(source.record, source.entries, source.manifest), lx=lineage,
        selection=lineage.selection, features=features, verified_head=lineage.source[
            "audit_head"])
    return f"---\n{card_data(lineage, features).to_yaml()}\n---\n\n{body}"
