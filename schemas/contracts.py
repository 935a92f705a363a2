"""The data contract: great_expectations suites for latent shards and the audit tables (PRIVACY.md 15).

A run publishes only when every suite passes on what it is about to publish;
``egoveil validate DIR`` runs the same suites on a published folder. Each suite
validates one table that ``privacy.data_contract`` builds from a file:

- ``latents_fields``: one row per Parquet field of a shard, beside the field the
  schema expects at that position (name, Arrow type, nullability);
- ``latents_rows``: a shard's rows, as pandas reads them;
- ``latents_embeddings``: one row per shard row, the embedding's byte length,
  decoded value count and non-finite values (pandas has no float16 vectors);
- ``audit_events``: the log's entries, ``counts`` as canonical JSON;
- ``audit_deadletters``: the dead letters;
- ``audit_record``: the record of processing, flattened to one row
  (``detector.weights_sha256`` and so on).

great_expectations is imported inside the builders: it takes seconds to import
and only validation needs it.
"""

from __future__ import annotations

from dataclasses import fields

from schemas.audit import (
    EVENT_KINDS,
    KEY_ID_REGEX,
    LOG_FIELDS,
    OPERATIONS,
    PATH_LIKE_REGEX,
    PSEUDONYM_REGEX,
    RUN_ID_REGEX,
    SHA256_REGEX,
)
from schemas.latents import QA_STATUSES
from schemas.records import REASONS, DeadLetter

# rgb: a monocular camera; left/right: the two eyes of a stereo pair; stereo: both eyes
# embedded together; side-left/side-right: Project Aria's side SLAM cameras.
VIEWS = ("rgb", "left", "right", "stereo", "side-left", "side-right")
FIELD_COLUMNS = ("position", "name", "type", "nullable",
                 "expected_name", "expected_type", "expected_nullable")
EMBEDDING_COLUMNS = ("clip_id", "declared_dim", "byte_length", "values", "nonfinite")
DEADLETTER_COLUMNS = tuple(f.name for f in fields(DeadLetter))
GEOHASH_CELL_REGEX = r"^[0-9bcdefghjkmnpqrstuvwxyz]{1,5}$"  # privacy.metadata_policy: 1-5
ISO_TIME_REGEX = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)$"
PURPOSE_REGEX = r"^[^\x00-\x1f]{1,200}$"  # any one-line label; paths are caught apart
MIN_MASK_SCALE = 1.3  # PRIVACY.md 1
MAX_FPS = 1000.0
MAX_CLIP_FRAMES = 100_000
RECORD_REQUIRED = (
    "run_id", "purpose", "consent_checked", "key_id", "config_sha256", "started_at",
    "published_at", "anonymization.detector", "anonymization.redaction.mode",
    "anonymization.redaction.mask_scale", "detector.name", "encoder.encoder_id",
    "encoder.pretrained", "encoder.embedding_dim", "runner",
)


def _suite(name: str, expectations: list):
    import great_expectations as gx

    suite = gx.ExpectationSuite(name=name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def latents_fields_suite(name: str, field_count: int):
    """A shard's columns are exactly the schema's: names, order, Arrow types, nullability."""
    import great_expectations.expectations as gxe

    return _suite(name, [
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(FIELD_COLUMNS)),
        gxe.ExpectTableRowCountToEqual(
            value=field_count, description="the shard has exactly the schema's columns"),
        *[gxe.ExpectColumnPairValuesToBeEqual(
            column_A=column, column_B=f"expected_{column}", ignore_row_if="neither",
            description=f"every column's {column} is the schema's")
          for column in ("name", "type", "nullable")],
    ])


def latents_rows_suite(name: str, *, columns: list[str], non_nullable: list[str], rows: int,
                       encoder_id: str, encoder_pretrained: bool, max_duration_s: float):
    """A shard's rows: pseudonyms well formed, no nulls, times relative, vocabularies closed."""
    import great_expectations.expectations as gxe

    optional = []  # columns that schema versions added
    if "device_id" in columns:
        optional.append(gxe.ExpectColumnValuesToMatchRegex(
            column="device_id", regex=PSEUDONYM_REGEX,
            description="device serials appear only as keyed pseudonyms"))
    if "pair_id" in columns:
        optional.append(gxe.ExpectColumnValuesToMatchRegex(
            column="pair_id", regex=PSEUDONYM_REGEX,
            description="stereo pair ids: 32 lowercase hex characters"))
    if "location_cell" in columns:
        optional.append(gxe.ExpectColumnValuesToMatchRegex(
            column="location_cell", regex=GEOHASH_CELL_REGEX,
            description="locations only as coarse geohash cells, never coordinates"))
    return _suite(name, [
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(columns)),
        gxe.ExpectTableRowCountToEqual(value=rows,
                                       description="as many rows as the manifest says"),
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in non_nullable],
        *[gxe.ExpectColumnValuesToMatchRegex(
            column=c, regex=PSEUDONYM_REGEX,
            description="keyed pseudonyms and clip ids: 32 lowercase hex characters")
          for c in ("clip_id", "recording_id", "wearer_id")],
        *optional,
        gxe.ExpectColumnValuesToBeUnique(column="clip_id"),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["recording_id", "view", "segment_index", "clip_index"]),
        gxe.ExpectColumnValuesToBeInSet(column="view", value_set=list(VIEWS)),
        gxe.ExpectColumnValuesToBeBetween(column="segment_index", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="clip_index", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(
            column="start_s", min_value=0, max_value=max_duration_s,
            description="times are seconds from the recording start, never wall-clock"),
        gxe.ExpectColumnValuesToBeBetween(column="end_s", min_value=0,
                                          max_value=max_duration_s + 60),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="end_s", column_B="start_s"),
        gxe.ExpectColumnValuesToBeBetween(column="frame_count", min_value=1,
                                          max_value=MAX_CLIP_FRAMES),
        gxe.ExpectColumnValuesToBeBetween(column="fps", min_value=0, max_value=MAX_FPS,
                                          strict_min=True),
        gxe.ExpectColumnValuesToBeInSet(column="encoder_id", value_set=[encoder_id],
                                        description="the encoder the record names"),
        gxe.ExpectColumnValuesToBeInSet(column="encoder_pretrained",
                                        value_set=[encoder_pretrained]),
        gxe.ExpectColumnValuesToBeBetween(column="faces_redacted", min_value=0),
        gxe.ExpectColumnValuesToBeInSet(column="qa_status", value_set=list(QA_STATUSES)),
    ])


def latents_embeddings_suite(name: str, embedding_dim: int, itemsize: int):
    """Every embedding has the declared length and only finite values."""
    import great_expectations.expectations as gxe

    return _suite(name, [
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(EMBEDDING_COLUMNS)),
        gxe.ExpectColumnValuesToBeInSet(
            column="declared_dim", value_set=[embedding_dim],
            description="the shard's metadata declares the encoder's embedding size"),
        gxe.ExpectColumnValuesToBeInSet(column="byte_length",
                                        value_set=[embedding_dim * itemsize]),
        gxe.ExpectColumnValuesToBeInSet(column="values", value_set=[embedding_dim]),
        gxe.ExpectColumnValuesToBeInSet(column="nonfinite", value_set=[0],
                                        description="no NaN or infinite value in an embedding"),
    ])


# A published segment's counts with a verification finding above zero: its checks
# (``verify_output_faces``, ``verify_linkable_faces``, ``verify_output_<class>``) all pass.
PUBLISHED_LEAK_REGEX = r'"verify_(?:output|linkable)_[a-z_]+":[1-9]'


def audit_events_suite(name: str):
    """The event log's entries: chain fields well formed, kinds and operations closed."""
    import great_expectations.expectations as gxe

    return _suite(name, [
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(LOG_FIELDS)),
        *[gxe.ExpectColumnValuesToNotBeNull(column=c)
          for c in ("seq", "prev", "at", "op", "op_id", "kind", "counts", "hash")],
        gxe.ExpectColumnValuesToBeIncreasing(column="seq", strictly=True),
        gxe.ExpectColumnValuesToBeBetween(column="seq", min_value=0),
        gxe.ExpectColumnValuesToMatchRegex(column="prev", regex=SHA256_REGEX),
        gxe.ExpectColumnValuesToMatchRegex(column="hash", regex=SHA256_REGEX),
        gxe.ExpectColumnValuesToBeUnique(column="hash"),
        gxe.ExpectColumnValuesToMatchRegex(column="at", regex=ISO_TIME_REGEX),
        gxe.ExpectColumnValuesToBeInSet(column="op", value_set=list(OPERATIONS)),
        gxe.ExpectColumnValuesToMatchRegex(column="op_id", regex=RUN_ID_REGEX),
        gxe.ExpectColumnValuesToBeInSet(column="kind", value_set=sorted(EVENT_KINDS)),
        gxe.ExpectColumnValuesToMatchRegex(column="recording_id", regex=PSEUDONYM_REGEX),
        gxe.ExpectColumnValuesToBeBetween(column="segment_index", min_value=0),
        gxe.ExpectColumnValuesToBeJsonParseable(column="counts"),
        gxe.ExpectColumnValuesToNotMatchRegex(
            column="counts", regex=PATH_LIKE_REGEX,
            description="no paths or URLs in the log (PRIVACY.md 14, 20)"),
        gxe.ExpectColumnValuesToNotMatchRegex(
            column="counts", regex=PUBLISHED_LEAK_REGEX,
            description="no segment was published whose verification still found a face, "
                        "a linkable face, a plate or a text region (PRIVACY.md 5, 6)"),
    ])


def audit_deadletters_suite(name: str, rows: int):
    """Dead letters: keyed input ids, closed reasons, no paths in the detail."""
    import great_expectations.expectations as gxe

    return _suite(name, [
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(DEADLETTER_COLUMNS)),
        gxe.ExpectTableRowCountToEqual(value=rows),
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("input_id", "stage", "reason")],
        gxe.ExpectColumnValuesToMatchRegex(column="input_id", regex=PSEUDONYM_REGEX),
        gxe.ExpectColumnValuesToMatchRegex(column="stage", regex=r"^[a-z_]{1,32}$"),
        gxe.ExpectColumnValuesToBeInSet(column="reason", value_set=list(REASONS)),
        gxe.ExpectColumnValuesToNotMatchRegex(
            column="detail", regex=PATH_LIKE_REGEX,
            description="no input path in a dead letter (PRIVACY.md 17, 20)"),
        gxe.ExpectColumnValuesToMatchRegex(column="recording_id", regex=PSEUDONYM_REGEX),
        gxe.ExpectColumnValuesToBeBetween(column="segment_index", min_value=0),
        gxe.ExpectColumnValuesToMatchRegex(
            column="wearer_id", regex=PSEUDONYM_REGEX,
            description="wearers appear only as keyed pseudonyms"),
    ])


def audit_record_suite(name: str, columns: list[str], string_columns: list[str],
                       number_columns: list[str]):
    """The record of processing names purpose, key id, models with hashes and thresholds
    (PRIVACY.md 13), and holds no path."""
    import great_expectations.expectations as gxe

    def ending(suffix: str) -> list[str]:
        return [c for c in columns if c == suffix or c.endswith("." + suffix)]

    counters = [c for c in number_columns if c.startswith(("totals.", "outcomes."))]
    return _suite(name, [
        gxe.ExpectTableRowCountToEqual(value=1),
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(RECORD_REQUIRED), exact_match=False,
            description="the record names purpose, key id, models and thresholds"),
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in RECORD_REQUIRED if c in columns],
        gxe.ExpectColumnValuesToMatchRegex(column="run_id", regex=RUN_ID_REGEX),
        gxe.ExpectColumnValuesToMatchRegex(column="key_id", regex=KEY_ID_REGEX),
        gxe.ExpectColumnValuesToMatchRegex(column="config_sha256", regex=SHA256_REGEX),
        gxe.ExpectColumnValuesToMatchRegex(column="purpose", regex=PURPOSE_REGEX),
        gxe.ExpectColumnValuesToBeInSet(column="consent_checked", value_set=[True, False]),
        # Faces' settings (``anonymization.redaction``) and each class's (``classes.<class>
        # .redaction``, in records written since detections had classes).
        *[gxe.ExpectColumnValuesToBeInSet(column=c, value_set=["solid", "pixelate", "blur"])
          for c in columns if c.endswith("redaction.mode")],
        *[gxe.ExpectColumnValuesToBeBetween(
            column=c, min_value=MIN_MASK_SCALE,
            description="masks cover the detected box scaled at least 1.3 (PRIVACY.md 1)")
          for c in columns if c.endswith("redaction.mask_scale")],
        *[gxe.ExpectColumnValuesToMatchRegex(column=c, regex=SHA256_REGEX,
                                             description="model weights named by their hash")
          for c in ending("weights_sha256")],
        *[gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1)
          for c in ending("threshold")],
        *[gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in counters],
        *[gxe.ExpectColumnValuesToNotMatchRegex(column=c, regex=PATH_LIKE_REGEX,
                                                description="no paths or URLs in the record")
          for c in string_columns],
    ])
