"""``egoveil run``: validate everything a user can get wrong, build the graph, run, report.

Every check that can fail because of the user happens here, before any worker
starts, and fails with one line (``UserError``). Messages name the flag, never
the path or the key, so console logs hold no input paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.anonymization_options import anonymization_config
from pipeline.errors import RunFailed, UserError
from pipeline.graph import GraphConfig, build_graph
from pipeline.latent_options import latent_settings
from pipeline.options import EgoveilOptions, unknown_arguments
from pipeline.output_lock import (
    RUNNING,
    OutputLockError,
    dead_staging,
    hold_output,
    staging_marker,
)
from pipeline.progress import ProgressMonitor
from pipeline.worker_deps import stage_for_workers
from privacy.audit_log import AuditLog, AuditLogBroken, AuditLogForeign
from privacy.audit_record import describe_verification, scrub_paths
from privacy.config import AnonymizationConfig
from privacy.consent import ConsentFileError, ConsentRegistry
from privacy.detectors.base import MAX_FRAME_PIXELS
from privacy.gates import FAILURE_RATE_JSON, failure_rate_message
from privacy.metadata_policy import OUTPUT_STREAMS, LocationPolicy
from privacy.pseudonyms import PseudonymKey, PseudonymKeyError
from privacy.tombstones import TombstoneError, Tombstones
from schemas.audit import DEADLETTER_FILE, EVENTS_FILE, MANIFEST, VALIDATION_JSON
from schemas.contracts import MAX_FPS
from schemas.detections import FACE
from transforms.discover import InputPattern, normalize_uri
from transforms.media.inputs import DecodeCaps
from transforms.models.encoders import EncoderUnavailable, resolve_encoder
from transforms.stores.audit_files import CONTRACT_FAILED_JSON
from transforms.stores.cleanup import LinkedFolder, check_owned_folders
from transforms.stores.filesystems import FileSystemsStore, read_file
from transforms.stores.keys import load_key
from transforms.stores.progress import STAGE_SECONDS, read_totals
from transforms.stores.tombstones import read_tombstones

log = logging.getLogger("egoveil")

LOCAL_RUNNERS = (None, "DirectRunner", "direct", "BundleBasedDirectRunner", "PrismRunner",
                 "prism")
# Runners that cannot carry this graph, as checked with Beam 2.77 (tests/test_runners.py
# shows each defect on a real cluster): refused before anything runs, never half-run.
UNSUPPORTED_RUNNERS = {
    "DaskRunner": "Beam's DaskRunner hands every tagged output of a multi-output step to each "
                  "of its consumers (Admit's audit events reach Segment, dead letters would "
                  "reach the stages) and drops what a DoFn emits in finish_bundle (RunInference's "
                  "last batch, file-writing sinks)",
}


@dataclass(slots=True)
class RunSummary:
    """What a finished run did, read back from what it published."""

    output: str
    wall_s: float
    totals: dict = field(default_factory=dict)
    deadletters_by_reason: dict = field(default_factory=dict)
    consent_excluded: int = 0
    erasure_excluded: int = 0
    frames: int = 0
    faces_detected: int = 0
    segments: int = 0
    segments_cached: int = 0
    segments_cache_rejected: int = 0
    audit_head: str = ""
    audit_key: str = ""
    contract: dict = field(default_factory=dict)
    rows_by_view: dict = field(default_factory=dict)
    cross_view_recovered: int = 0
    detected_by_class: dict = field(default_factory=dict)  # classes besides faces too
    vrs_files: list = field(default_factory=list)  # the vrs_streams events' counts
    # Local runs: seconds the anonymize stage spent in all (busy_s) and waiting on the
    # decoder (decode_s), summed over segments.
    stage_seconds: dict = field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


def _resolve_patterns(inputs: list[str]) -> list[InputPattern]:
    patterns = []
    for number, raw in enumerate(inputs, start=1):
        uri = normalize_uri(raw)
        if "://" not in uri and os.path.isdir(uri):
            patterns.append(InputPattern(os.path.join(uri, "**"), media_only=True))
            continue
        try:
            matches = FileSystems.match([uri], limits=[1])[0].metadata_list
        except Exception as exc:  # noqa: BLE001 - unknown scheme, missing extra, no access
            raise UserError(f"--input #{number} cannot be listed ({type(exc).__name__}); check "
                            "the path and, for gs:// or s3://, that the extra is installed "
                            "(pip install 'egoveil[gcp]' or 'egoveil[aws]')") from None
        if not matches:
            raise UserError(f"--input #{number} matches no file; check the path or glob")
        patterns.append(InputPattern(uri, media_only=False))
    return patterns


def _check_readable(path: str, flag: str) -> None:
    try:
        if not FileSystems.exists(path):
            raise UserError(f"{flag} file does not exist")
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{flag} cannot be read ({type(exc).__name__})") from None


def _prepare_output(output: str) -> str:
    out = normalize_uri(output)
    if "://" not in out:
        if os.path.exists(out) and not os.path.isdir(out):
            raise UserError("--output exists and is not a folder")
        try:
            os.makedirs(out, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=out, prefix=".egoveil-write-test-"):
                pass
        except OSError as exc:
            raise UserError(f"--output is not writable ({exc.strerror or type(exc).__name__})") \
                from None
    return out


def _library_versions() -> dict:
    import av
    import cv2
    import pyarrow
    import torch
    import transformers

    return {"apache_beam": beam.__version__, "pyarrow": pyarrow.__version__,
            "av": av.__version__, "opencv": cv2.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def _check_numbers(opts: EgoveilOptions) -> None:
    if not opts.output:
        raise UserError("--output is required")
    if not opts.input and not opts.manifest:
        raise UserError("give recordings with --input and/or --manifest")
    for name in ("frame_stride", "batch_size"):
        if getattr(opts, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if opts.frames_per_clip is not None and opts.frames_per_clip < 1:
        raise UserError("--frames-per-clip must be at least 1")
    if opts.resolution is not None and opts.resolution < 1:
        raise UserError("--resolution must be at least 1")
    if not 0 <= opts.max_failure_rate <= 1:
        raise UserError("--max-failure-rate must be between 0 and 1 (a fraction of inputs)")
    if opts.segment_seconds <= 0 or opts.target_shard_mb <= 0:
        raise UserError("--segment-seconds and --target-shard-mb must be positive")
    if not 0 < opts.max_pixels <= MAX_FRAME_PIXELS:
        raise UserError(f"--max-pixels must be between 1 and {MAX_FRAME_PIXELS} (4096x4096), "
                        "the largest frame the face detector takes")
    if not 0 < opts.max_fps <= MAX_FPS:
        raise UserError(f"--max-fps must be above 0 and at most {MAX_FPS:g}")
    if opts.max_duration_s <= 0 or opts.max_input_gb <= 0:
        raise UserError("--max-duration-s and --max-input-gb must be positive")
    if opts.wait_for_lock < 0:
        raise UserError("--wait-for-lock takes seconds, 0 or more")


def _load_key(opts: EgoveilOptions) -> PseudonymKey:
    try:
        return load_key(opts.key_file)
    except PseudonymKeyError as exc:
        raise UserError(str(exc)) from None


def _check_consent(opts: EgoveilOptions) -> bool:
    """Whether consent is checked; a registry that cannot be used is a user error."""
    if not opts.consent:
        return False
    try:
        ConsentRegistry.from_bytes(read_file(opts.consent))
    except OSError as exc:
        raise UserError("--consent: cannot read the consent file "
                        f"({type(exc).__name__})") from None
    except ConsentFileError as exc:
        raise UserError(f"--consent: {exc}") from None
    return True


def _describe_models(anonymization: AnonymizationConfig) -> tuple[dict, dict]:
    """The record's description of every class's detector (loading each once, so that a
    detector that cannot be loaded fails here) and of the verification models."""
    from privacy.detectors import build_detector

    classes = {}
    for policy in anonymization.policies:
        flag = "--detector" if policy.detection_class == FACE else \
            f"--{policy.detection_class}-detector"
        try:
            detector = build_detector(policy.detector).describe()
        except Exception as exc:  # noqa: BLE001 - a detector that does not load is a user problem
            raise UserError(f"{flag} cannot be loaded: {str(exc).splitlines()[0]}") from None
        classes[policy.detection_class] = scrub_paths({
            "detector": detector, "redaction": dataclasses.asdict(policy.redaction),
            "temporal_window": policy.temporal_window, "cross_view": policy.cross_view,
            "schedule": policy.schedule.describe(), "follow_motion": policy.follow_motion,
            "strong_detector": policy.strong_detector})
    try:
        verification = describe_verification(
            anonymization.verification, tuple(p.detection_class for p in
                                              anonymization.other_classes))
    except Exception as exc:  # noqa: BLE001 - a verifier that does not load is a user problem
        raise UserError(f"--verifier cannot be loaded: {str(exc).splitlines()[0]}") from None
    return classes, verification


def _open_output(opts: EgoveilOptions, key: PseudonymKey, run_id: str,
                 hold: contextlib.ExitStack | None) -> tuple[str, Tombstones]:
    """The output folder, checked: writable, its own folders no links, locked for this run
    (when ``hold`` is given: until it closes), its log intact, its tombstones of this key.
    """
    output = _prepare_output(opts.output)
    try:
        check_owned_folders(output)
    except LinkedFolder as exc:
        raise UserError(f"--output: {exc}") from None
    if hold is not None:
        try:
            hold.enter_context(hold_output(output, "run", run_id, opts.wait_for_lock))
        except OutputLockError as exc:
            raise UserError(str(exc)) from None
    try:
        audit_log = AuditLog.load(FileSystemsStore(output))
    except AuditLogBroken as exc:
        raise UserError(f"--output holds an audit log that does not verify ({exc}); a run never "
                        "appends to a broken log: restore it or use a new --output") from None
    try:
        tombstones = read_tombstones(output)
        tombstones.check_key(key.key_id, key.legacy_key_id)
    except TombstoneError as exc:
        raise UserError(f"--output: {exc}") from None
    try:
        audit_log.check_sealed_by(key.seal_signer().public)
    except AuditLogForeign as exc:
        raise UserError(f"--output holds an audit log that this key did not seal ({exc}); "
                        "give the key the output was written with, or use a new --output") \
            from None
    return output, tombstones


def _check_runner(argv: list[str]) -> None:
    runner_name = str(PipelineOptions(argv).view_as(StandardOptions).runner or "")
    why = UNSUPPORTED_RUNNERS.get(runner_name.rsplit(".", 1)[-1])
    if why:
        raise UserError(f"--runner {runner_name.rsplit('.', 1)[-1]} cannot run egoveil: {why}; "
                        "use the DirectRunner, Dataflow, or Flink or Spark through the "
                        "PortableRunner")


def prepare(argv: list[str], hold: contextlib.ExitStack | None = None
            ) -> tuple[PipelineOptions, GraphConfig, EgoveilOptions]:
    """Parse and validate ``egoveil run`` arguments.

    Args:
        argv: the arguments after ``run``.
        hold: where to keep the output's lock (``pipeline.output_lock``) until the run
            is over; None takes no lock (a check of the arguments only).

    Returns:
        The Beam pipeline options, the graph's configuration, and egoveil's own options.

    Raises:
        UserError: any problem the user can fix, as one line; another run or erasure
            holding the output is one.
    """
    _check_runner(argv)
    unknown = unknown_arguments(argv)
    if unknown:
        raise UserError(f"unknown option {unknown[0]}; see `egoveil run --help`")
    options = PipelineOptions(argv)
    opts = options.view_as(EgoveilOptions)
    _check_numbers(opts)
    key = _load_key(opts)
    try:
        location = LocationPolicy(opts.location_geohash)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    consent_checked = _check_consent(opts)
    if opts.manifest:
        _check_readable(opts.manifest, "--manifest")
    patterns = _resolve_patterns(opts.input)
    run_id = uuid.uuid4().hex[:16]
    # The output's state (log, tombstones) is read once the run holds it.
    output, tombstones = _open_output(opts, key, run_id, hold)
    anonymization = anonymization_config(opts)
    if opts.device == "cuda":  # detection batched on the GPU, decoding on NVDEC where offered
        anonymization = anonymization.on_device("cuda")
    classes, verification_info = _describe_models(anonymization)
    try:
        encoder = resolve_encoder(opts.encoder, opts.encoder_revision, opts.frames_per_clip,
                                  opts.resolution)
    except EncoderUnavailable as exc:
        raise UserError(str(exc)) from None
    layout, runtime = latent_settings(opts, encoder)

    caps = DecodeCaps(max_pixels=opts.max_pixels, max_duration_s=opts.max_duration_s,
                      max_bytes=int(opts.max_input_gb * 1024**3), max_fps=opts.max_fps)
    runner = options.view_as(StandardOptions).runner
    local = runner in LOCAL_RUNNERS and "://" not in output
    progress_dir = None
    if local and hold is not None:  # removed when the run is over, however it ends
        progress_dir = tempfile.mkdtemp(prefix="egoveil-progress-")
        hold.callback(shutil.rmtree, progress_dir, True)
    stage_for_workers(options, runner in LOCAL_RUNNERS,
                      os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    # What decides a run's outputs: the cache and clip ids are keyed by its hash.
    config_blob = json.dumps({"anonymization": anonymization.describe(),
                              "encoder": encoder.describe(),
                              "latents": layout.describe(),
                              "frame_stride": opts.frame_stride,
                              "segment_seconds": opts.segment_seconds,
                              "clips": opts.clips, "key_id": key.key_id,
                              "stereo_embed": opts.stereo_embed,
                              "purpose": opts.purpose, **location.describe()}, sort_keys=True)
    config_sha = hashlib.sha256(config_blob.encode()).hexdigest()
    record = {
        "run_id": run_id,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "purpose": opts.purpose,
        "consent_checked": consent_checked,
        "key_id": key.key_id,
        "metadata": {"wearer_id": "keyed pseudonym", "device_serial": "keyed pseudonym",
                     "capture_start": "consent check only; outputs hold offsets",
                     **location.describe(), "streams": OUTPUT_STREAMS},
        "erasure": {"tombstones": len(tombstones),
                    "tombstones_sha256": tombstones.fingerprint()},
        "config_sha256": config_sha,
        "inputs": {"patterns": len(patterns), "manifest": bool(opts.manifest)},
        "anonymization": scrub_paths(anonymization.describe()),
        "detector": classes[FACE]["detector"],
        "classes": classes,
        "verification": verification_info,
        "encoder": encoder.describe(),
        "latents": layout.describe(),
        "encoder_runtime": {"device": runtime.device, "precision": runtime.precision,
                            "compile": runtime.compile, "batch_size": runtime.batch_size},
        "clips": {"frames_per_clip": encoder.frames_per_clip, "frame_stride": opts.frame_stride,
                  "segment_seconds": opts.segment_seconds, "write_clips": opts.clips,
                  "stereo_embed": opts.stereo_embed},
        "caps": {"max_pixels": caps.max_pixels, "max_duration_s": caps.max_duration_s,
                 "max_bytes": caps.max_bytes, "max_fps": caps.max_fps,
                 "max_frames": caps.max_frames},
        "max_failure_rate": opts.max_failure_rate,
        "runner": runner or "DirectRunner",
        "versions": _library_versions(),
    }
    graph = GraphConfig(
        patterns=patterns, manifest=normalize_uri(opts.manifest) if opts.manifest else None,
        output=output, staging=FileSystems.join(output, ".staging", run_id),
        key_file=opts.key_file, consent_file=opts.consent, purpose=opts.purpose,
        anonymization=anonymization, encoder=encoder, frame_stride=opts.frame_stride,
        segment_seconds=opts.segment_seconds, write_clips=opts.clips,
        batch_size=opts.batch_size, target_shard_bytes=int(opts.target_shard_mb * 1024**2),
        caps=caps, config_fingerprint=config_sha, progress_dir=progress_dir, record=record,
        tombstones=tombstones, location=location, layout=layout, runtime=runtime,
        joint_pairs=opts.stereo_embed == "joint", max_failure_rate=opts.max_failure_rate,
        use_cache=opts.cache)
    _warn(consent_checked, location, tombstones, encoder)
    return options, graph, opts


def _warn(consent_checked: bool, location: LocationPolicy, tombstones: Tombstones,
          encoder) -> None:
    if not consent_checked:
        log.warning("consent is not being checked: no --consent registry was given")
    if location.geohash_precision is not None:
        log.warning("locations are kept as geohash cells of precision %d in every shard row; "
                    "beside a wearer pseudonym they can narrow down where a wearer lives",
                    location.geohash_precision)
    if len(tombstones):
        log.info("honouring %d erasure tombstones in this output", len(tombstones))
    if not encoder.pretrained:
        log.warning("encoder %s has random weights (not pretrained); every shard row records "
                    "encoder_pretrained=false", encoder.encoder_id)


def summarize(output: str, wall_s: float) -> RunSummary:
    """Read a published run back: totals, dead letters by reason, consent exclusions."""
    summary = RunSummary(output=output, wall_s=wall_s)
    with FileSystems.open(FileSystems.join(output, MANIFEST)) as handle:
        manifest = json.load(handle)
    summary.totals = manifest["totals"]
    summary.audit_head = manifest.get("audit", {}).get("head", "")
    summary.audit_key = manifest.get("audit", {}).get("audit_key", "")
    if FileSystems.exists(FileSystems.join(output, VALIDATION_JSON)):
        with FileSystems.open(FileSystems.join(output, VALIDATION_JSON)) as handle:
            summary.contract = {k: v for k, v in json.load(handle).items()
                                if k in ("success", "expectations", "batches")}
    with FileSystems.open(FileSystems.join(output, DEADLETTER_FILE)) as handle:
        for line in handle.read().decode().splitlines():
            reason = json.loads(line)["reason"]
            summary.deadletters_by_reason[reason] = summary.deadletters_by_reason.get(reason, 0) + 1
    with FileSystems.open(FileSystems.join(output, EVENTS_FILE)) as handle:
        for line in handle.read().decode().splitlines():
            event = json.loads(line)
            if event.get("op_id") != manifest["run_id"]:
                continue  # the log holds every earlier operation on this folder too
            if event["kind"] == "consent_excluded":
                summary.consent_excluded += 1
            elif event["kind"] == "erasure_excluded":
                summary.erasure_excluded += 1
            elif event["kind"] == "segment_anonymized":
                summary.segments += 1
                summary.frames += event["counts"].get("frames_emitted", 0)
                summary.faces_detected += event["counts"].get("faces_detected", 0)
                summary.cross_view_recovered += event["counts"].get("cross_view_recovered", 0)
                for name, figures in (event["counts"].get("classes") or {}).items():
                    summary.detected_by_class[name] = \
                        summary.detected_by_class.get(name, 0) + figures.get("detected", 0)
            elif event["kind"] == "segment_cached":
                summary.segments_cached += 1
            elif event["kind"] == "segment_cache_rejected":
                summary.segments_cache_rejected += 1
            elif event["kind"] == "vrs_streams":
                summary.vrs_files.append(event["counts"])
    summary.rows_by_view = _rows_by_view(output, manifest)
    return summary


def _rows_by_view(output: str, manifest: dict) -> dict:
    """Published shard rows per view (only the ``view`` column is read)."""
    import pyarrow.parquet as pq

    counts: dict = {}
    for entry in manifest.get("files", []):
        if entry.get("kind") != "latents":
            continue
        with FileSystems.open(FileSystems.join(output, entry["path"])) as handle:
            views = pq.read_table(handle, columns=["view"]).column("view").to_pylist()
        for view in views:
            counts[view] = counts.get(view, 0) + 1
    return dict(sorted(counts.items()))


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None,
        show_progress: bool | None = None) -> RunSummary:
    """Run ``egoveil run`` with ``argv`` (without the ``run`` word) and return its summary.

    The run holds its output's lock (``pipeline.output_lock``) from before it reads the
    output's state until it has read back what it published.

    Raises:
        UserError: bad arguments or inputs, or an output in use (nothing was processed).
    """
    with contextlib.ExitStack() as hold:
        options, graph, opts = prepare(list(argv or []), hold)
        return _run_locked(options, graph, opts, test_pipeline, show_progress)


def _run_locked(options: PipelineOptions, graph: GraphConfig, opts: EgoveilOptions,
                test_pipeline: beam.Pipeline | None, show_progress: bool | None) -> RunSummary:
    started = time.perf_counter()
    pipeline = test_pipeline or beam.Pipeline(options=options)
    build_graph(pipeline, graph)
    enabled = opts.progress if show_progress is None else show_progress
    run_id = graph.record["run_id"]
    # The staging folder exists from now until publishing: `egoveil erase` refuses to
    # rewrite an output while a run into it could still publish rows it erased. Its
    # marker says this run held the lock, so that once the run is gone, the next one
    # knows the folder for a dead run's.
    with FileSystems.create(FileSystems.join(graph.staging, RUNNING)) as handle:
        handle.write(staging_marker("run", run_id))
    try:
        if graph.progress_dir:
            with ProgressMonitor(graph.progress_dir, enabled=enabled):
                pipeline.run().wait_until_finish()
        else:
            pipeline.run().wait_until_finish()
    except Exception:
        if FileSystems.exists(graph.staging):
            FileSystems.delete([graph.staging])
        _raise_if_erased_during_run(graph)
        raise
    failure = failure_rate_failure(graph.staging) or contract_failure(graph.staging)
    if failure:
        # Its folder keeps the reasons; the marker says the run ended (it did not die).
        with FileSystems.create(FileSystems.join(graph.staging, RUNNING)) as handle:
            handle.write(staging_marker("run", run_id, failed_gate=True))
        raise RunFailed(failure)
    summary = summarize(graph.output, time.perf_counter() - started)
    # Published: what runs that died here left behind is of no use any more (their
    # files were retired by this publish), so their staging folders go.
    dead, _, _ = dead_staging(graph.output, run_id)
    if dead:
        FileSystems.delete(dead)
    if graph.progress_dir:  # local runs: where the anonymize stage spent its time
        totals = read_totals(graph.progress_dir)
        summary.stage_seconds = {k: round(totals[k], 3) for k in STAGE_SECONDS if k in totals}
    return summary


def _staged_json(staging: str, name: str) -> dict | None:
    """A verdict a run left in its staging folder, or None when there is none."""
    path = FileSystems.join(staging, name)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        return json.load(handle)


def failure_rate_failure(staging: str) -> str | None:
    """One line saying why a run failed the failure-rate gate, or None when it did not."""
    verdict = _staged_json(staging, FAILURE_RATE_JSON)
    if verdict is None:
        return None
    return failure_rate_message(verdict, staging.rstrip("/").rsplit("/", 1)[-1])


def contract_failure(staging: str) -> str | None:
    """One line saying why a run's data contract failed, or None when it did not fail."""
    doc = _staged_json(staging, CONTRACT_FAILED_JSON)
    if doc is None:
        return None
    from privacy.data_contract import describe_expectation

    first = next((f"{r['name']} ({r['suite']}): {describe_expectation(e)}"
                  for r in doc["results"] for e in r["expectations"] if not e["success"]), "")
    return (f"the data contract failed ({doc['failed']} of {doc['expectations']} "
            f"expectations; first: {first}); nothing was published. Results and the staged "
            f"shards are in .staging/{staging.rstrip('/').rsplit('/', 1)[-1]}/")


def _raise_if_erased_during_run(graph: GraphConfig) -> None:
    """Turn a publish refused because of a concurrent erasure into one line."""
    try:
        changed = read_tombstones(graph.output).fingerprint() != \
            graph.record["erasure"]["tombstones_sha256"]
    except TombstoneError:
        changed = True
    if changed:
        raise UserError("an erasure was made in this output while the run was going, so "
                        "nothing was published; run again to honour it") from None
