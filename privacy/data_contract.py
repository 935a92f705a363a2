"""Running the data contract with great_expectations, in process, on an ephemeral context.

The suites live in ``schemas.contracts``; this module turns files into the tables
they validate, runs them and keeps the results. Results hold counts and column
names, never values: ``partial_unexpected_count`` is 0, so a raw identifier that
slipped into a shard is reported as "1 unexpected value", not copied into
``audit/validation.json``.

The results page is a self-contained HTML equivalent of Data Docs: great_expectations'
own Data Docs pages load scripts and styles from public CDNs, which an auditor's
browser should not have to fetch to read a compliance record.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa

from privacy.audit_chain import canonical_json
from schemas import contracts
from schemas.audit import DEADLETTER_FILE, EVENTS_FILE, LOG_FIELDS, RECORD_FILE
from schemas.latents import LatentLayout, latent_schema, numpy_dtype, shard_metadata

RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 0,
                 "include_unexpected_rows": False}
DEFAULT_MAX_DURATION_S = 4 * 3600.0


@dataclass(slots=True)
class BatchResult:
    """One suite on one table.

    Attributes:
        name: what was validated (``latents/part-00000.parquet``, ``audit/record.json``).
        suite: which suite (``latents_rows``, ``audit_record``, ...).
        success: every expectation held.
        expectations: one summary per expectation (type, column, success, unexpected
            count, observed value where it is not data).
        raw: great_expectations' own result, serialized.
    """

    name: str
    suite: str
    success: bool
    expectations: list[dict]
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def failed(self) -> list[dict]:
        return [e for e in self.expectations if not e["success"]]


@dataclass(slots=True)
class ContractResult:
    """Every batch of one contract run."""

    batches: list[BatchResult]
    validated_at: str
    gx_version: str

    @property
    def success(self) -> bool:
        return all(b.success for b in self.batches)

    @property
    def evaluated(self) -> int:
        return sum(len(b.expectations) for b in self.batches)

    @property
    def failed(self) -> int:
        return sum(len(b.failed) for b in self.batches)

    def first_failure(self) -> str | None:
        """One line naming the first expectation that failed, or None."""
        for batch in self.batches:
            for exp in batch.failed:
                return f"{batch.name} ({batch.suite}): {describe_expectation(exp)}"
        return None

    def summary(self) -> dict:
        return {"success": self.success, "batches": len(self.batches),
                "expectations": self.evaluated, "failed": self.failed}

    def to_json(self) -> bytes:
        doc = {
            "success": self.success, "validated_at": self.validated_at,
            "great_expectations_version": self.gx_version, **self.summary(),
            "results": [{"name": b.name, "suite": b.suite, "success": b.success,
                         "expectations": b.expectations} for b in self.batches],
            "great_expectations_results": [b.raw for b in self.batches],
        }
        return json.dumps(doc, indent=1, sort_keys=True, default=str).encode() + b"\n"

    def to_html(self) -> str:
        from privacy.contract_page import render_contract_page

        return render_contract_page(self)


def describe_expectation(exp: dict) -> str:
    target = exp.get("column") or ", ".join(exp.get("columns") or []) or "table"
    text = f"{exp['type']}({target})"
    if exp.get("unexpected_count"):
        text += f": {exp['unexpected_count']} of {exp.get('element_count')} values unexpected"
    elif exp.get("observed") is not None:
        text += f": observed {exp['observed']}"
    elif exp.get("error"):
        text += f": {exp['error']}"
    return text


# ---------------------------------------------------------------- tables


def fields_frame(schema: pa.Schema, expected: pa.Schema) -> pd.DataFrame:
    """One row per column position: the file's field beside the schema's."""
    rows = []
    for position in range(max(len(schema), len(expected))):
        got = schema.field(position) if position < len(schema) else None
        want = expected.field(position) if position < len(expected) else None
        rows.append({"position": position,
                     "name": got.name if got else None, "type": str(got.type) if got else None,
                     "nullable": got.nullable if got else None,
                     "expected_name": want.name if want else None,
                     "expected_type": str(want.type) if want else None,
                     "expected_nullable": want.nullable if want else None})
    return pd.DataFrame(rows, columns=list(contracts.FIELD_COLUMNS)).astype(object)


def embeddings_frame(table: pa.Table, declared_dim: int | None,
                     dtype: str = "float16") -> pd.DataFrame:
    """Per row: embedding byte length, decoded value count and non-finite values."""
    value_type = numpy_dtype(dtype)
    itemsize = value_type.itemsize
    names = table.column_names
    clip_ids = table.column("clip_id").to_pylist() if "clip_id" in names else \
        [None] * table.num_rows
    blobs = table.column("embedding").to_pylist() if "embedding" in names else \
        [None] * table.num_rows
    lengths, values, nonfinite = [], [], []
    for blob in blobs:
        if not isinstance(blob, (bytes, bytearray)):
            lengths.append(None)
            values.append(None)
            nonfinite.append(None)
            continue
        usable = len(blob) - len(blob) % itemsize
        decoded = np.frombuffer(blob[:usable], dtype=value_type).astype(np.float32)
        lengths.append(len(blob))
        values.append(int(decoded.size))
        nonfinite.append(int((~np.isfinite(decoded)).sum()))
    return pd.DataFrame({"clip_id": clip_ids, "declared_dim": [declared_dim] * table.num_rows,
                         "byte_length": lengths, "values": values, "nonfinite": nonfinite},
                        columns=list(contracts.EMBEDDING_COLUMNS))


def events_frame(entries: list[dict]) -> pd.DataFrame:
    rows = [{k: (canonical_json(e.get(k)).decode() if k == "counts" else e.get(k))
             for k in LOG_FIELDS} for e in entries]
    frame = pd.DataFrame(rows, columns=list(LOG_FIELDS)).astype(object)
    for column in ("seq", "segment_index"):
        frame[column] = pd.array(frame[column].tolist(), dtype="Int64")
    return frame


def deadletters_frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(records, columns=list(contracts.DEADLETTER_COLUMNS)).astype(object)
    frame["segment_index"] = pd.array(frame["segment_index"].tolist(), dtype="Int64")
    return frame


def flatten(value: dict, prefix: str = "") -> dict:
    """Nested dicts to dotted keys; lists become canonical JSON strings."""
    flat = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            flat.update(flatten(item, name + "."))
        elif isinstance(item, (list, dict)):
            flat[name] = canonical_json(item).decode()
        else:
            flat[name] = item
    return flat


def record_frame(record: dict) -> pd.DataFrame:
    return pd.DataFrame([flatten(record)]).astype(object)


# ---------------------------------------------------------------- running


@dataclass(slots=True)
class ShardSource:
    """A shard to validate: its published name, expected rows and a loader for its table."""

    name: str
    rows: int
    load: Callable[[], pa.Table]


def _layout(record: dict, embedding_dim: int) -> LatentLayout:
    """The latent layout a run declared in its record (float16 embeddings if it did not)."""
    latents = record.get("latents") or {}
    shape = latents.get("tokens_shape")
    return LatentLayout(embedding_dim=max(embedding_dim, 1),
                        dtype=latents.get("dtype") or "float16",
                        token_grid=tuple(shape[:3]) if shape else None,
                        token_dim=int(shape[3]) if shape else None)


class DataContract:
    """The contract for one run's outputs, parameterized by its record of processing.

    Args:
        record: the run's record (encoder id, pretrained flag, embedding size, caps).
    """

    def __init__(self, record: dict) -> None:
        encoder = record.get("encoder") or {}
        self.embedding_dim = int(encoder.get("embedding_dim") or 0)
        self.layout = _layout(record, self.embedding_dim)
        self.encoder_id = encoder.get("encoder_id")
        self.encoder_pretrained = bool(encoder.get("pretrained"))
        caps = record.get("caps") or {}
        self.max_duration_s = float(caps.get("max_duration_s") or DEFAULT_MAX_DURATION_S)
        self.record = record

    def validate(self, shards: Iterable[ShardSource], deadletters: list[dict],
                 log_entries: list[dict]) -> ContractResult:
        """Run every suite: each shard (fields, rows, embeddings), the log, the dead
        letters and the record. Shards are loaded one at a time."""
        import great_expectations as gx

        runner = _Runner()
        batches: list[BatchResult] = []
        expected = latent_schema(self.layout)
        non_nullable = [f.name for f in expected if not f.nullable]
        itemsize = self.layout.itemsize
        for number, shard in enumerate(shards):
            table = shard.load()
            try:
                declared = shard_metadata(table.schema).get("embedding_dim")
            except ValueError:
                declared = None
            batches.append(runner.run(
                shard.name, "latents_fields",
                contracts.latents_fields_suite(f"latents_fields_{number}", len(expected)),
                fields_frame(table.schema, expected)))
            batches.append(runner.run(
                shard.name, "latents_rows",
                contracts.latents_rows_suite(
                    f"latents_rows_{number}", columns=expected.names,
                    non_nullable=non_nullable, rows=shard.rows, encoder_id=self.encoder_id,
                    encoder_pretrained=self.encoder_pretrained,
                    max_duration_s=self.max_duration_s),
                table.to_pandas()))
            batches.append(runner.run(
                shard.name, "latents_embeddings",
                contracts.latents_embeddings_suite(f"latents_embeddings_{number}",
                                                   self.embedding_dim, itemsize),
                embeddings_frame(table, declared, self.layout.dtype)))
            del table
        batches.append(runner.run(EVENTS_FILE, "audit_events",
                                  contracts.audit_events_suite("audit_events"),
                                  events_frame(log_entries)))
        batches.append(runner.run(DEADLETTER_FILE, "audit_deadletters",
                                  contracts.audit_deadletters_suite("audit_deadletters",
                                                                    len(deadletters)),
                                  deadletters_frame(deadletters)))
        frame = record_frame(self.record)
        values = frame.iloc[0]
        strings = [c for c in frame.columns if isinstance(values[c], str)]
        numbers = [c for c in frame.columns if isinstance(values[c], (int, float))
                   and not isinstance(values[c], bool)]
        batches.append(runner.run(RECORD_FILE, "audit_record",
                                  contracts.audit_record_suite("audit_record",
                                                               list(frame.columns), strings,
                                                               numbers),
                                  frame))
        return ContractResult(batches,
                              datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              gx.__version__)


class _Runner:
    """One ephemeral great_expectations context with a pandas datasource."""

    def __init__(self) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        for name in ("great_expectations", "great_expectations.core",
                     "great_expectations.expectations.registry"):
            logging.getLogger(name).setLevel(logging.ERROR)
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        self._gx = gx
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False, progress_bars=ProgressBarsConfig(globally=False))
        self._context = gx.get_context(mode="ephemeral", project_config=config)
        self._source = self._context.data_sources.add_pandas("egoveil")
        self._count = 0

    def run(self, name: str, suite_kind: str, suite, frame: pd.DataFrame) -> BatchResult:
        gx, context = self._gx, self._context
        self._count += 1
        asset = self._source.add_dataframe_asset(f"{suite_kind}_{self._count}")
        batch = asset.add_batch_definition_whole_dataframe("whole")
        suite = context.suites.add(suite)
        definition = context.validation_definitions.add(gx.ValidationDefinition(
            name=f"{suite_kind}_{self._count}", data=batch, suite=suite))
        result = definition.run(batch_parameters={"dataframe": frame},
                                result_format=RESULT_FORMAT)
        expectations = [_summarize(r) for r in result.results]
        expectations.sort(key=lambda e: (e["success"], e["type"], e.get("column") or ""))
        return BatchResult(name=name, suite=suite_kind, success=bool(result.success),
                           expectations=expectations, raw=result.to_json_dict())


def _summarize(result) -> dict:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    if "column_A" in kwargs:
        columns = [kwargs["column_A"], kwargs["column_B"]]
    elif "column_list" in kwargs and config.type == "expect_compound_columns_to_be_unique":
        columns = list(kwargs["column_list"])
    else:
        columns = None
    out = {"type": config.type, "success": bool(result.success),
           "column": kwargs.get("column"), "columns": columns,
           "kwargs": json.loads(json.dumps(kwargs, default=str)),
           "description": config.description, "element_count": None,
           "unexpected_count": None, "missing_count": None, "observed": None, "error": None}
    details = result.result or {}
    if "unexpected_count" in details:
        out["element_count"] = details.get("element_count")
        out["unexpected_count"] = details.get("unexpected_count")
        out["missing_count"] = details.get("missing_count")
    elif "observed_value" in details:
        out["observed"] = json.loads(json.dumps(details["observed_value"], default=str))
    info = result.exception_info or {}
    raised = [v for v in info.values() if isinstance(v, dict) and v.get("raised_exception")] \
        if "raised_exception" not in info else [info]
    if raised and raised[0].get("raised_exception"):
        out["error"] = str(raised[0].get("exception_message") or "")[:300]
    return out
