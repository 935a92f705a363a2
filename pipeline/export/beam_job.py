"""A large export as a Beam job: one element per source shard, then one finishing step.

Each source shard is exported by a worker of its own (``export_shard``, the same
function the in-process path runs, so both give the same files); the finishing
step waits for every shard's files, records the export in the source's log and
writes the card and the lineage, inside the pipeline, as ``transforms.publish``
publishes a run: the launcher only reads the lineage back.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.errors import UserError
from pipeline.export.job import ExportConfig, ShardTask, export_shard, finish
from pipeline.export.lineage import load_lineage


class ExportShardFn(beam.DoFn):
    """Writes one source shard's rows into the export (metric: ``export_rows``)."""

    def __init__(self, cfg: ExportConfig, clip_sizes: dict) -> None:
        self._cfg = cfg
        self._sizes = clip_sizes
        self._rows = beam.metrics.Metrics.counter("egoveil", "export_rows")

    def process(self, task: ShardTask):
        for written in export_shard(self._cfg, task, self._sizes):
            self._rows.inc(written["rows"])
            yield written


class FinishExportFn(beam.DoFn):
    """Runs once, after every shard: records the export, writes the card and lineage."""

    def __init__(self, cfg: ExportConfig) -> None:
        self._cfg = cfg

    def process(self, _, files):
        lineage = finish(self._cfg, list(files))
        yield lineage.export_id


class ExportShards(beam.PTransform):
    """Source shards to export files, spread over workers, then the one finishing step."""

    def __init__(self, cfg: ExportConfig, tasks: list[ShardTask], clip_sizes: dict) -> None:
        super().__init__()
        self._cfg, self._tasks, self._sizes = cfg, tasks, clip_sizes

    def expand(self, pipeline):
        files = (pipeline
                 | "SourceShards" >> beam.Create(self._tasks)
                 | "OneShardPerWorker" >> beam.Reshuffle()
                 | "ExportShard" >> beam.ParDo(ExportShardFn(self._cfg, self._sizes)))
        return (pipeline
                | "Once" >> beam.Create([None])
                | "Finish" >> beam.ParDo(FinishExportFn(self._cfg),
                                         files=beam.pvalue.AsList(files)))


def run_beam_export(cfg: ExportConfig, tasks: list[ShardTask], clip_sizes: dict,
                    beam_argv: list[str], test_pipeline=None):
    """Run the export job (DirectRunner unless ``beam_argv`` names another) and return the
    lineage it wrote."""
    pipeline = test_pipeline or beam.Pipeline(options=PipelineOptions(beam_argv))
    _ = pipeline | "Export" >> ExportShards(cfg, tasks, clip_sizes)
    try:
        pipeline.run().wait_until_finish()
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a UserError raised on a worker comes back wrapped
        message = str(exc)
        marker = "UserError: "
        if marker in message:
            raise UserError(message.split(marker, 1)[1].splitlines()[0]) from None
        raise
    return load_lineage(cfg.dest)
