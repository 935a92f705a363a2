"""The ``egoveil`` command: run, redact, demo, erase, export, keygen, make-encoder, audit,
validate.

Errors a user can cause print one line (``egoveil: error: ...``) and exit 2;
errors that are bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


class _DropNoise(logging.Filter):
    """Beam warns at import about optional GCP clients that egoveil does not use."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


def configure_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("egoveil: %(message)s"))
    handler.addFilter(_DropNoise())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("egoveil").setLevel(logging.INFO)
    for noisy in ("apache_beam", "transformers", "huggingface_hub", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.ERROR)


def closing_note(summary) -> list[str]:
    """Views written, faces the other eye recovered, and what VRS streams were read or dropped."""
    from privacy.aria_streams import stream_order

    lines = []
    if set(summary.rows_by_view) - {"rgb"}:
        lines.append("rows by view: " + ", ".join(f"{view} {count}" for view, count
                                                  in summary.rows_by_view.items()))
        lines.append(f"cross-view search: {summary.cross_view_recovered} faces missed in one "
                     "eye were found through the other and redacted")
    for number, vrs in enumerate(summary.vrs_files, start=1):
        read = ", ".join(f"{sid} ({vrs['streams_read'][sid]})"
                         for sid in sorted(vrs["streams_read"], key=stream_order))
        by_kind: dict = {}
        for sid in sorted(vrs["streams_dropped"], key=stream_order):
            kind = vrs["streams_dropped"][sid]
            by_kind.setdefault(kind, []).append(sid)
        dropped = "; ".join(f"{kind}: {', '.join(ids)}" for kind, ids in by_kind.items())
        lines.append(f"VRS file {number}: {vrs['streams_listed']} streams listed; read "
                     f"{len(vrs['streams_read'])}: {read}")
        lines.append(f"VRS file {number}: dropped unread {len(vrs['streams_dropped'])}: "
                     f"{dropped}; file tags (device serial, session id) never read")
    return lines


def _print_summary(summary) -> None:
    t = summary.totals
    failed = sum(summary.deadletters_by_reason.values())
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary.deadletters_by_reason.items()))
    log = logging.getLogger("egoveil")
    log.info("%d segments anonymized, %d frames, %d face detections redacted",
             summary.segments, summary.frames, summary.faces_detected)
    others = {k: v for k, v in summary.detected_by_class.items() if k != "face"}
    if others:
        log.info("other classes: %s", ", ".join(f"{n} {name} detections redacted"
                                                 for name, n in sorted(others.items())))
    if summary.consent_excluded:
        log.info("%d recordings excluded without reading them (no valid consent)",
                 summary.consent_excluded)
    if summary.erasure_excluded:
        log.info("%d recordings skipped without decoding them (erased from this output)",
                 summary.erasure_excluded)
    if failed:
        log.info("%d of %d inputs failed (%d dead letters: %s), see deadletter/",
                 t.get("inputs_failed", 0), t.get("inputs", 0), failed, reasons)
    if summary.segments_cached:
        log.info("%d segments reused from an earlier run of the same configuration "
                 "(OUTPUT/.cache)", summary.segments_cached)
    if summary.segments_cache_rejected:
        log.warning("%d cached segments were changed after they were written (their MAC does "
                    "not hold) and were done again; see segment_cache_rejected in the audit "
                    "log", summary.segments_cache_rejected)
    log.info("%d latent rows in %d shards, %d clips; manifest.json and _SUCCESS written",
             t.get("latent_rows", 0), t.get("shards", 0), t.get("clips", 0))
    for line in closing_note(summary):
        log.info("%s", line)
    log.info("wall %.1f s, %.1f frames/s", summary.wall_s, summary.frames_per_second)
    if summary.contract.get("success"):
        log.info("data contract passed: %d expectations on %d tables (audit/validation.html)",
                 summary.contract["expectations"], summary.contract["batches"])
    if summary.audit_head:
        log.info("audit log head %s, sealed with audit key %s: keep the head outside the "
                 "folder; `egoveil audit verify DIR --key-file KEY.pub --expect-head HEAD` "
                 "detects seals made by anyone else and a rewritten log", summary.audit_head,
                 summary.audit_key)


def _cmd_run(argv: list[str]) -> int:
    from pipeline.runner import run

    summary = run(argv)
    _print_summary(summary)
    return 0


def _cmd_demo(args) -> int:
    import os

    from pipeline.demo import demo_argv
    from pipeline.runner import run

    argv = demo_argv(args.dir, args.encoder)
    summary = run(argv + ["--no-progress"] if args.no_progress else argv)
    _print_summary(summary)
    logging.getLogger("egoveil").info("demo outputs are in %s", os.path.join(args.dir, "output"))
    return 0


def _cmd_redact(args) -> int:
    from pipeline.anonymization_options import anonymization_config
    from pipeline.redact import redact_file
    from schemas.detections import FACE

    config = anonymization_config(args)
    if args.device == "cuda":
        config = config.on_device("cuda")
    stats = redact_file(args.input, args.output, config, stereo=args.stereo)
    log = logging.getLogger("egoveil")
    log.info("%d frames, %d face detections redacted, %.1f s (%.1f frames/s)", stats.frames,
             stats.faces_detected, stats.wall_s, stats.frames_per_second)
    others = {name: n for name, n in stats.detected.items() if name != FACE}
    if others:
        log.info("other classes: %s", ", ".join(f"{n} {name} detections redacted"
                                                 for name, n in sorted(others.items())))
    v = stats.verification
    if v.frames_checked:
        log.info("verified %d frames: %d faces unlinkable, no face found by the independent "
                 "detector%s%s", v.frames_checked, v.faces_checked,
                 "".join(f", every {name} region its detector found covered"
                         for name in sorted(v.checked)),
                 " (after a stronger second pass)" if stats.reredacted else "")
    return 0


def _write_public_key(path: str, key) -> str:
    """Write the audit key's public half beside the key file (never overwrites)."""
    public = key.seal_signer().public
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(public.to_pem())
    return public.fingerprint


def _cmd_keygen(args) -> int:
    from pipeline.errors import UserError
    from privacy.pseudonyms import PseudonymKey, PseudonymKeyError

    log = logging.getLogger("egoveil")
    public_file = args.file + ".pub"
    try:
        if args.public:
            from transforms.stores.keys import load_key

            key = load_key(args.file)
        else:
            key = PseudonymKey.create_file(args.file)
            log.info("new pseudonym key written (key id %s); keep it outside the data and "
                     "never commit it", key.key_id)
        fingerprint = _write_public_key(public_file, key)
    except PseudonymKeyError as exc:
        raise UserError(str(exc)) from None
    except FileExistsError:
        raise UserError("the key file or its .pub exists already; egoveil never overwrites "
                        "a key") from None
    except OSError as exc:
        raise UserError(f"cannot write the key file ({exc.strerror})") from None
    log.info("public audit key written beside it (FILE.pub, audit key %s): give it to "
             "auditors, who check seals with `egoveil audit verify DIR --key-file FILE.pub`",
             fingerprint)
    return 0


def _cmd_erase(args) -> int:
    from pipeline.erase import erase

    if not args.wearer and not args.recording:
        from pipeline.errors import UserError

        raise UserError("name what to erase with --wearer ID and/or --recording URI_OR_ID")
    if args.wait_for_lock < 0:
        from pipeline.errors import UserError

        raise UserError("--wait-for-lock takes seconds, 0 or more")
    summary = erase(args.dir, args.wearer or [], args.recording or [], args.key_file,
                    wait_s=args.wait_for_lock)
    log = logging.getLogger("egoveil")
    log.info("erasure %s: %d rows removed (%d shards rewritten, %d removed), %d clips and %d "
             "unlisted files deleted, %d dead letters removed, %d tombstones added; recorded "
             "in audit/events.jsonl", summary.erasure_id, summary.rows_removed,
             summary.shards_rewritten, summary.shards_removed, summary.clips_deleted,
             summary.unlisted_files_deleted, summary.deadletters_removed,
             summary.tombstones_added)
    return 0


def export_parser() -> argparse.ArgumentParser:
    """``egoveil export``'s own options (any standard Beam option is accepted beside them)."""
    from pipeline.export.job import DEFAULT_BEAM_ABOVE_GB, ENGINES

    parser = argparse.ArgumentParser(
        prog="egoveil export", description="Export a published output as a WebDataset or a "
        "Hugging Face dataset with a dataset card (`egoveil export DIR --to webdataset DEST`), "
        "or bring an export in line with DIR's erasures (`egoveil export DIR --sync DEST`). "
        "Standard Beam options (--runner, --direct_num_workers, ...) run a large export as a "
        "Beam job.")
    parser.add_argument("dir", nargs="?", help="a published egoveil output folder")
    parser.add_argument("dest", nargs="?", help="a new folder for the export")
    parser.add_argument("--to", choices=("webdataset", "hf"), help="the dataset format")
    parser.add_argument("--sync", metavar="DEST", default=None,
                        help="remove from the export in DEST every row DIR has erased since")
    parser.add_argument("--split", default=None, metavar="NAME=SHARE,...",
                        help="splits by wearer, e.g. train=0.9,val=0.1 (default: one train "
                             "split)")
    parser.add_argument("--split-seed", default="", help="mixed into the split assignment")
    parser.add_argument("--qa-status", default=None, metavar="STATUS,...",
                        help="rows of these QA statuses (default: verified,reredacted_verified)")
    parser.add_argument("--view", default=None, metavar="VIEW,...", help="rows of these views")
    parser.add_argument("--encoder", default=None, metavar="ID,...",
                        help="rows of these encoder ids")
    parser.add_argument("--min-frames", type=int, default=0, help="rows of at least N frames")
    parser.add_argument("--time-range", default=None, metavar="START:END",
                        help="rows inside this span, seconds from the recording start")
    parser.add_argument("--columns", default=None, metavar="COLUMN,...",
                        help="shard columns to keep (clip_id always)")
    parser.add_argument("--keep-pseudonyms", action="store_true",
                        help="keep the wearer_id and device_id pseudonyms")
    parser.add_argument("--no-clips", action="store_true",
                        help="leave the anonymized clips out even when the run wrote them")
    parser.add_argument("--target-shard-mb", type=float, default=256.0,
                        help="about this many MB per export file (default 256)")
    parser.add_argument("--license", default="unknown",
                        help="licence id for the dataset card (e.g. cc-by-4.0)")
    parser.add_argument("--task-category", action="append", default=None,
                        help="Hub task category for the card (repeatable; default "
                             "feature-extraction)")
    parser.add_argument("--name", default=None, help="the dataset's name on its card")
    parser.add_argument("--key-file", default=None,
                        help="the key DIR was written with, which signs the export's entry in "
                             "DIR's audit log (default: $EGOVEIL_PSEUDONYM_KEY)")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="local (in this process), beam (a Beam job, one worker per source "
                             "shard) or auto: beam above --beam-above-gb of source files")
    parser.add_argument("--beam-above-gb", type=float, default=DEFAULT_BEAM_ABOVE_GB)
    parser.add_argument("--workers", type=int, default=1,
                        help="source shards exported at once by the local engine (threads; "
                             "each holds a row group and its clips)")
    return parser


def _cmd_export(argv: list[str]) -> int:
    from pipeline.errors import UserError
    from pipeline.export.job import ExportRequest, export
    from pipeline.export.lineage import sync
    from pipeline.options import unknown_arguments
    from privacy.export_policy import ExportFilter, ExportPolicyError, SplitSpec

    parser = export_parser()
    if any(a in ("-h", "--help") for a in argv):
        parser.print_help()
        return 0
    args, beam_argv = parser.parse_known_intermixed_args(argv)
    unknown = unknown_arguments(beam_argv, positionals=True)
    if unknown:
        raise UserError(f"unknown option {unknown[0]}; see `egoveil export --help`"
                        if unknown[0].startswith("-") else "egoveil export takes DIR and DEST "
                        "only; see `egoveil export --help`")
    log = logging.getLogger("egoveil")
    if args.sync:
        if not args.dir or args.dest or args.to:
            raise UserError("--sync takes the source and the export: `egoveil export DIR "
                            "--sync DEST` (an export names its source by content hash and log "
                            "head, never by path)")
        summary = sync(args.dir, args.sync, args.key_file)
        if summary.in_sync_already:
            log.info("export %s is in sync with DIR already: no erasure since it was written "
                     "or last synced", summary.export_id)
        else:
            log.info("export %s synced: %d rows removed, %d files rewritten, %d erasures "
                     "applied; recorded in DIR's audit log", summary.export_id,
                     summary.rows_removed, summary.files_rewritten,
                     len(summary.erasures_applied))
        return 0
    if not args.dir or not args.dest or not args.to:
        raise UserError("give DIR, --to webdataset|hf and DEST: `egoveil export DIR --to "
                        "webdataset DEST`")
    try:
        request = ExportRequest(
            to=args.to, dest=args.dest, split=SplitSpec.parse(args.split, args.split_seed),
            filter=ExportFilter.from_options(args.qa_status, args.view, args.encoder,
                                             args.min_frames, args.time_range, args.columns,
                                             args.keep_pseudonyms),
            clips=not args.no_clips, target_shard_mb=args.target_shard_mb,
            license=args.license,
            task_categories=tuple(args.task_category or ("feature-extraction",)),
            name=args.name, engine=args.engine, beam_above_gb=args.beam_above_gb,
            workers=args.workers, key_file=args.key_file)
    except ExportPolicyError as exc:
        raise UserError(str(exc)) from None
    summary = export(args.dir, request, beam_argv)
    splits = ", ".join(f"{name} {s['rows']} rows ({s['identities']} wearers or recordings)"
                       for name, s in summary.splits.items())
    log.info("export %s: %d rows in %d files (%.1f MB), %s; engine %s", summary.export_id,
             summary.rows, summary.files, summary.bytes / 1e6, splits, summary.engine)
    log.info("recorded in DIR's audit log (entry %s); DEST/README.md is the dataset card, "
             "DEST/egoveil-export.json the lineage `egoveil export DIR --sync DEST` reads",
             summary.audit_entry)
    return 0


def _cmd_make_encoder(args) -> int:
    from transforms.models.encoders import save_random_encoder

    save_random_encoder(args.dir, args.preset)
    logging.getLogger("egoveil").info("randomly initialised %s saved with save_pretrained; "
                                      "use it with --encoder DIR", args.preset)
    return 0


def _cmd_audit(args) -> int:
    from pipeline.audit_cli import cmd_report, cmd_verify

    return {"verify": cmd_verify, "report": cmd_report}[args.audit_command](args)


def _cmd_validate(args) -> int:
    from pipeline.audit_cli import cmd_validate

    return cmd_validate(args)


def _parser() -> argparse.ArgumentParser:
    from pipeline.anonymization_options import add_anonymization_args
    from pipeline.redact import STEREO_CHOICES

    parser = argparse.ArgumentParser(
        prog="egoveil", description="Privacy-preserving egocentric video to world-model latents.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show Beam's own logs")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", add_help=False,
                   help="run the Beam pipeline (see `egoveil run --help`)")
    sub.add_parser("export", add_help=False,
                   help="export a published output as a WebDataset or Hugging Face dataset, "
                        "or sync an export with its erasures (see `egoveil export --help`)")
    red = sub.add_parser("redact", help="anonymize one video or image")
    red.add_argument("input")
    red.add_argument("output", help="output file; its extension picks the format")
    add_anonymization_args(red)
    red.add_argument("--stereo", default="none", choices=STEREO_CHOICES,
                     help="a stereo video packed side by side (sbs) or top-bottom (tb): each "
                          "eye is anonymized and searched against the other")
    red.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                     help="cuda: detection batched on the GPU (onnxruntime-gpu, `pip install "
                          "'egoveil[gpu]'`), decoding on NVDEC where FFmpeg offers it "
                          "(default %(default)s)")
    demo = sub.add_parser("demo", help="make sample recordings and run the pipeline offline")
    demo.add_argument("dir")
    demo.add_argument("--encoder", default=None,
                      help="encoder to use (default: the V-JEPA 2 default if it can be had, "
                           "else a small random one)")
    demo.add_argument("--no-progress", action="store_true")
    era = sub.add_parser("erase", help="erase a wearer's or a recording's rows, clips and "
                                       "dead letters from an output, and keep them out")
    era.add_argument("dir", help="a published output folder")
    era.add_argument("--wearer", action="append", metavar="ID",
                     help="raw wearer id, as in the manifest and consent registry (repeatable)")
    era.add_argument("--recording", action="append", metavar="URI_OR_ID",
                     help="the recording's file (hashed to find it) or its recording_id "
                          "pseudonym (repeatable)")
    era.add_argument("--key-file", default=None,
                     help="the key the output was written with (default: "
                          "$EGOVEIL_PSEUDONYM_KEY)")
    era.add_argument("--wait-for-lock", type=float, default=0.0, metavar="SECONDS",
                     help="when a run or another erasure holds DIR, wait this long for it to "
                          "finish (default 0: refuse at once)")
    key = sub.add_parser("keygen", help="write a new random pseudonym key file, and its "
                                        "public audit key as FILE.pub")
    key.add_argument("file")
    key.add_argument("--public", action="store_true",
                     help="only write FILE.pub, the public audit key of the existing key FILE")
    enc = sub.add_parser("make-encoder", help="save a randomly initialised encoder (for tests)")
    enc.add_argument("dir")
    enc.add_argument("--preset", default="vjepa2-tiny",
                     help="vjepa2-tiny, vjepa2-small, vjepa2-vitl, dinov2-tiny or dinov2-vitb14")
    from pipeline.audit_cli import add_parsers

    add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv[:1] or "--verbose" in argv[:1]
    configure_logging(verbose)
    from pipeline.errors import UserError

    try:
        if argv and argv[0] in ("-v", "--verbose"):
            argv = argv[1:]
        if argv and argv[0] == "run":
            if any(a in ("-h", "--help") for a in argv[1:]):
                from pipeline.options import EgoveilOptions

                help_parser = argparse.ArgumentParser(
                    prog="egoveil run", description="Anonymize recordings and write latent "
                    "shards. Any standard Beam pipeline option (--runner, --project, "
                    "--direct_num_workers, --setup_file, ...) is accepted too.")
                EgoveilOptions._add_argparse_args(help_parser)
                help_parser.print_help()
                return 0
            return _cmd_run(argv[1:])
        if argv and argv[0] == "export":
            return _cmd_export(argv[1:])
        args = _parser().parse_args(argv)
        return {"redact": _cmd_redact, "demo": _cmd_demo, "keygen": _cmd_keygen,
                "erase": _cmd_erase, "make-encoder": _cmd_make_encoder, "audit": _cmd_audit,
                "validate": _cmd_validate}[args.command](args)
    except UserError as exc:
        print(f"egoveil: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("egoveil: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, the traceback on -v
        if verbose:
            raise
        # The message is left out: it may quote an input path (PRIVACY.md 20).
        print(f"egoveil: internal error ({type(exc).__name__}); nothing was published; run "
              "again with -v for the traceback and report it", file=sys.stderr)
        return 3


def entry() -> None:
    """The ``egoveil`` command: ``main``, then leave without finalizing the interpreter.

    Native libraries (FFmpeg, OpenCV, dlib, torch) run threads of their own. Letting
    Python finalize while one of them is parked in C++ aborted about one run in
    twenty with "terminate called without an active exception" (exit 134), after
    everything had been published. By now every file is written and closed, so the
    process flushes its console and exits at once with main's code.
    """
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken pipe: nothing left to say
    os._exit(code)


if __name__ == "__main__":
    entry()
