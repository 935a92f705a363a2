"""The same graph of ``egoveil run`` on real Beam runners other than the in-process DirectRunner.

- DirectRunner in multi-processing mode: the DoFns are pickled and run in SDK worker
  processes that import the packages themselves (the closest local stand-in for a
  cluster).
- PortableRunner against Beam's own job service (``local_job_service_main``), the same
  Job API that Flink's and Spark's job servers speak; ``LOOPBACK`` workers run in
  this process.

Each must publish what the in-process run publishes from the same input, key and
encoder: the same latent rows, a manifest, ``_SUCCESS`` and an audit log that verifies.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, WorkerOptions

from pipeline.runner import run, summarize
from pipeline.worker_deps import stage_for_workers
from schemas.latents import embedding_array
from tests.cli import egoveil
from transforms.models.encoders import RANDOM_PRESETS

TINY_DIM = RANDOM_PRESETS["vjepa2-tiny"]["hidden_size"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _args(video: str, out, key_file: str, encoder: str, *extra: str) -> list[str]:
    return ["--input", video, "--output", str(out), "--key-file", key_file,
            "--encoder", encoder, "--no-progress", *extra]


def _latents(out) -> tuple[list[str], np.ndarray]:
    """The published rows' clip ids and float32 embeddings, sorted by clip id."""
    table = pq.read_table(os.path.join(str(out), "latents")).sort_by("clip_id")
    return (table.column("clip_id").to_pylist(),
            embedding_array(table.column("embedding"), TINY_DIM).astype(np.float32))


def _assert_published_like(out, baseline) -> None:
    """``out`` holds a complete, verifiable publication with ``baseline``'s rows."""
    assert (out / "_SUCCESS").exists() and (out / "manifest.json").exists()
    assert sorted(p.name for p in (out / "latents").glob("part-*.parquet"))
    # audit verify checks every listed file's sha256, the chain and the record.
    assert egoveil("audit", "verify", str(out)).returncode == 0
    ids, emb = _latents(out)
    base_ids, base_emb = _latents(baseline)
    assert ids == base_ids and len(ids) >= 1
    # Same clips, same redacted frames, same weights: only float reductions in a
    # different process or thread layout may differ, within float16 storage precision.
    np.testing.assert_allclose(emb, base_emb, rtol=1e-2, atol=1e-3)
    got, want = summarize(str(out), 1.0), summarize(str(baseline), 1.0)
    assert (got.frames, got.segments, got.totals["latent_rows"]) == \
        (want.frames, want.segments, want.totals["latent_rows"])
    assert got.frames > 0


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, sample_video, key_file, tiny_encoder):
    """The in-process DirectRunner run every other runner is compared with."""
    out = tmp_path_factory.mktemp("direct") / "out"
    run(_args(sample_video[0], out, key_file, tiny_encoder))
    return out


def test_direct_runner_multi_processing(tmp_path, baseline, sample_video, key_file,
                                        tiny_encoder):
    video = sample_video[0]
    out = tmp_path / "out"
    # Through the command in a subprocess: its SDK worker processes write to the
    # console, which must stay free of paths like the in-process run's.
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run",
         *_args(video, out, key_file, tiny_encoder, "--direct_running_mode",
                "multi_processing", "--direct_num_workers", "2")],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_published_like(out, baseline)
    for secret in (video, key_file, os.path.basename(video)):
        assert secret not in result.stderr and secret not in result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def job_endpoint(tmp_path_factory):
    """Beam's portable job service in a subprocess, as a Flink or Spark job server would be."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("jobservice") / "log.txt", "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
         "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"job service exited with {proc.returncode}: {log.read()[-2000:]}")
            try:
                with socket.create_connection(("localhost", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("job service did not listen within 60 s")
                time.sleep(0.2)
        yield f"localhost:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_portable_runner_on_the_job_service(tmp_path, baseline, sample_video, key_file,
                                           tiny_encoder, job_endpoint):
    out = tmp_path / "out"
    summary = run(_args(sample_video[0], out, key_file, tiny_encoder, "--runner",
                        "PortableRunner", "--job_endpoint", job_endpoint,
                        "--environment_type", "LOOPBACK"))
    assert summary.frames > 0
    _assert_published_like(out, baseline)


# What each kind of runner gets staged for its workers (pipeline.worker_deps).

def _staged(*argv: str, local: bool = False) -> PipelineOptions:
    options = PipelineOptions(list(argv))
    stage_for_workers(options, local, REPO)
    return options


def test_remote_workers_get_the_setup_file_and_the_dlib_standin():
    # DOCKER without an image: Beam's default SDK image, which lacks egoveil.
    options = _staged("--runner", "FlinkRunner", "--environment_type", "DOCKER")
    setup = options.view_as(SetupOptions)
    assert setup.setup_file == os.path.join(REPO, "setup.py")
    (wheel,) = setup.extra_packages
    assert os.path.basename(wheel).startswith("dlib-") and os.path.isfile(wheel)


def test_loopback_and_custom_containers_stage_nothing():
    for argv in (("--runner", "PortableRunner", "--environment_type", "LOOPBACK"),
                 ("--runner", "DataflowRunner", "--sdk_container_image", "r/egoveil-cpu:1"),
                 ("--runner", "PortableRunner", "--environment_type", "DOCKER",
                  "--environment_config", "r/egoveil-cpu:1"),
                 ("--runner", "FlinkRunner", "--environment_type", "docker",
                  "--environment_option", "docker_container_image=r/egoveil-cpu:1")):
        setup = _staged(*argv).view_as(SetupOptions)
        assert setup.setup_file is None and not setup.extra_packages, argv


def test_local_workers_log_no_options_unless_asked():
    worker = _staged("--direct_running_mode", "multi_processing", local=True) \
        .view_as(WorkerOptions)
    assert worker.default_sdk_harness_log_level == "WARNING"
    assert worker.sdk_harness_log_level_overrides == {
        "apache_beam.options.pipeline_options": "ERROR"}
    asked = _staged("--default_sdk_harness_log_level", "DEBUG", local=True) \
        .view_as(WorkerOptions)
    assert asked.default_sdk_harness_log_level == "DEBUG"
    assert asked.sdk_harness_log_level_overrides is None
    assert _staged(local=True).view_as(SetupOptions).setup_file is None


# Beam's DaskRunner, against a dask.distributed scheduler and two worker processes.

class _SplitByParity(beam.DoFn):
    """A multi-output step, as Discover, Admit, Resume and Anonymize are."""

    def process(self, n):
        yield n if n % 2 == 0 else beam.pvalue.TaggedOutput("odd", n)


class _Report(beam.DoFn):
    """Writes what reached each consumer to a file (the runner returns no results)."""

    def __init__(self, path: str) -> None:
        self._path = path

    def process(self, _, even, odd, batches):
        import json

        with open(self._path, "w") as handle:
            json.dump({"even": sorted(even), "odd": sorted(odd),
                       "batched": sorted(sum(batches, []))}, handle)
        yield None


def _probe(options: list[str], report: str) -> dict:
    """The Beam constructs egoveil's graph rests on, on ``options``' runner."""
    import json

    p = beam.Pipeline(options=PipelineOptions(options))
    numbers = p | "Numbers" >> beam.Create(list(range(10)))
    split = numbers | "Split" >> beam.ParDo(_SplitByParity()).with_outputs("odd", main="even")
    # RunInference batches with BatchElements, which emits its last, partial batch from
    # finish_bundle.
    batches = numbers | "Batch" >> beam.BatchElements(min_batch_size=4, max_batch_size=4)
    _ = (p | "Once" >> beam.Create([None])
         | "Report" >> beam.ParDo(_Report(report), beam.pvalue.AsList(split.even),
                                  beam.pvalue.AsList(split.odd), beam.pvalue.AsList(batches)))
    result = p.run()
    result.wait_until_finish()
    if hasattr(result, "client"):  # the DaskRunner's connection, which it never closes
        result.client.close()
    with open(report) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def dask_scheduler(tmp_path_factory):
    """A dask.distributed scheduler and two single-threaded worker processes."""
    distributed = pytest.importorskip("distributed")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("dask")
    # The scheduler unpickles the task graph too: it must import what the client pickled.
    env = {**os.environ, "PYTHONPATH": REPO}
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"], cwd=REPO, env=env,
                              stdout=open(logs / "scheduler.txt", "w"),  # noqa: SIM115
                              stderr=subprocess.STDOUT)]
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", address, "--nworkers", "2", "--nthreads",
             "1", "--no-dashboard"], cwd=REPO, env=env,
            stdout=open(logs / "workers.txt", "w"), stderr=subprocess.STDOUT))  # noqa: SIM115
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)  # two processes (--nworkers 2)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


DASK = "apache_beam.runners.dask.dask_runner.DaskRunner"


def test_the_dask_runner_mixes_tagged_outputs_and_drops_finish_bundle_output(dask_scheduler,
                                                                            tmp_path):
    """Why egoveil refuses the DaskRunner (Beam 2.77): on the same constructs the
    DirectRunner is right, the DaskRunner hands every tag of a multi-output step to every
    consumer and loses what finish_bundle emits. If this test fails, Beam fixed them: try
    the graph on it and lift the refusal (pipeline.runner.UNSUPPORTED_RUNNERS)."""
    import apache_beam.runners.dask.dask_runner  # noqa: F401 - registers the Dask options

    direct = _probe([], str(tmp_path / "direct.json"))
    assert direct == {"even": [0, 2, 4, 6, 8], "odd": [1, 3, 5, 7, 9],
                      "batched": list(range(10))}
    dask = _probe(["--runner", DASK, "--dask_client_address", dask_scheduler],
                  str(tmp_path / "dask.json"))
    assert dask["even"] == dask["odd"] == list(range(10))  # each consumer got both tags
    assert len(dask["batched"]) == 8  # the last batch of 2, emitted in finish_bundle, is gone


def test_egoveil_refuses_the_dask_runner_before_it_starts(tmp_path, sample_video, key_file,
                                                         tiny_encoder):
    out = tmp_path / "out"
    result = egoveil("run", *_args(sample_video[0], out, key_file, tiny_encoder,
                                   "--runner", DASK, "--dask_client_address",
                                   "tcp://127.0.0.1:9"))
    err = result.stderr
    assert result.returncode == 2
    lines = [line for line in err.splitlines() if line.startswith("egoveil: error:")]
    assert len(lines) == 1 and "--runner DaskRunner cannot run egoveil" in lines[0]
    assert "finish_bundle" in lines[0] and not out.exists()
