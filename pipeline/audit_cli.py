"""``egoveil audit verify``, ``egoveil audit report`` and ``egoveil validate``.

Exit codes: 0 when everything holds, 1 when the folder fails a check (the first
problem is named on the first line), 2 for a mistake in the command line.
None of them writes into the folder they check: evidence is read, never changed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from typing import TYPE_CHECKING

from pipeline.errors import UserError

if TYPE_CHECKING:  # Beam is imported when a command runs, not when the parser is built
    from transforms.stores.filesystems import FileSystemsStore

log = logging.getLogger("egoveil")


def add_parsers(sub) -> None:
    """Add ``audit`` (``verify``, ``report``) and ``validate`` to the ``egoveil`` parser."""
    audit = sub.add_parser("audit", help="verify an output folder or report on it")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify", help="exit 0 only if the log, manifest, record and files are intact")
    verify.add_argument("dir")
    verify.add_argument("--expect-head", default=None, metavar="HASH",
                        help="a log head kept from an earlier check: fail if the log was "
                             "rewritten since")
    verify.add_argument("--key-file", default=None, metavar="FILE.pub",
                        help="the folder owner's public audit key (`egoveil keygen` writes it "
                             "as FILE.pub): fail unless every seal was made with it")
    verify.add_argument("--json", action="store_true", help="print the findings as JSON")
    report = audit_sub.add_parser("report", help="a report for an auditor")
    report.add_argument("dir")
    report.add_argument("--html", default=None, metavar="FILE",
                        help="write a self-contained HTML report (figures, redacted thumbnails)")
    report.add_argument("--thumbnails", type=int, default=12,
                        help="most redacted thumbnails in the HTML report (0 for none)")
    validate = sub.add_parser("validate", help="run the data contract (great_expectations)")
    validate.add_argument("dir")
    validate.add_argument("--html", default=None, metavar="FILE",
                          help="also write the results page here")
    validate.add_argument("--json", default=None, metavar="FILE",
                          help="also write the results as JSON here")


def _store(directory: str) -> FileSystemsStore:
    from transforms.discover import normalize_uri
    from transforms.stores.filesystems import FileSystemsStore

    path = normalize_uri(directory)
    if "://" not in path and not os.path.isdir(path):
        raise UserError("DIR is not a folder; give an egoveil output folder")
    return FileSystemsStore(path)


def _published(store: FileSystemsStore) -> None:
    from schemas.audit import MANIFEST

    if not store.exists(MANIFEST):
        raise UserError("DIR has no manifest.json: it is not a published egoveil output "
                        "(`egoveil audit verify DIR` says more)")


def _writable_file(path: str, flag: str, directory: str) -> str:
    """A file the command may write: in an existing folder, and outside DIR (a file
    written into the folder being checked is a file it does not list, so it would
    fail its own verification)."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UserError(f"{flag}: the folder for FILE does not exist")
    if os.path.isdir(path):
        raise UserError(f"{flag}: FILE is a folder")
    if "://" not in directory:
        root = os.path.realpath(directory)
        target = os.path.join(os.path.realpath(parent), os.path.basename(path))
        if os.path.commonpath([root, target]) == root:
            raise UserError(f"{flag}: FILE is inside DIR; write it outside the output folder "
                            "(egoveil never writes into the folder it checks)")
    return path


def _public_key(path: str):
    from privacy.audit_seal import SealKey, SealKeyError

    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 16)
    except OSError as exc:
        raise UserError(f"--key-file cannot be read ({exc.strerror or type(exc).__name__})") \
            from None
    try:
        return SealKey.from_pem(data)
    except SealKeyError as exc:
        raise UserError(f"--key-file: {exc}") from None


def cmd_verify(args: argparse.Namespace) -> int:
    from privacy.audit_verify import verify_output

    if args.expect_head and not re.fullmatch(r"[0-9a-f]{64}", args.expect_head):
        raise UserError("--expect-head takes a log head: 64 lowercase hex characters")
    key = _public_key(args.key_file) if args.key_file else None
    report = verify_output(_store(args.dir), expect_head=args.expect_head, key=key)
    if args.json:
        print(json.dumps({"ok": report.ok, "head": report.head, "entries": report.entries,
                          "files_checked": report.files_checked, "run_id": report.run_id,
                          "audit_key": report.audit_key, "key_checked": report.key_checked,
                          "findings": [{"where": f.where, "problem": f.problem}
                                       for f in report.findings],
                          "notices": [{"where": f.where, "problem": f.problem}
                                      for f in report.notices]}, indent=2))
        return 0 if report.ok else 1
    for notice in report.notices:
        print(f"egoveil: audit verify: notice: {notice}", file=sys.stderr)
    if report.ok:
        print(f"egoveil: audit verify: OK: {report.entries} log entries in an unbroken chain, "
              f"{report.files_checked} files match manifest.json, record of run "
              f"{report.run_id} matches the log")
        if report.key_checked:
            print(f"egoveil: every seal was made with the audit key given ({report.audit_key})")
        else:
            print(f"egoveil: seals signed with audit key {report.audit_key}; pass the owner's "
                  "public key (--key-file FILE.pub) to check that they made them")
        print(f"egoveil: log head {report.head} (keep it; `--expect-head` detects a rewrite)")
        return 0
    first, *rest = report.findings
    print(f"egoveil: audit verify: FAILED: {first}", file=sys.stderr)
    for finding in rest[:20]:
        print(f"egoveil:   also: {finding}", file=sys.stderr)
    if len(rest) > 20:
        print(f"egoveil:   and {len(rest) - 20} more", file=sys.stderr)
    return 1


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.audit_report import build_report, render_html, render_text

    store = _store(args.dir)
    _published(store)
    if args.html:
        _writable_file(args.html, "--html", store.root)
    if args.thumbnails < 0:
        raise UserError("--thumbnails must be 0 or more")
    report = build_report(store, thumbnails=args.thumbnails if args.html else 0)
    print(render_text(report))
    if args.html:
        with open(args.html, "w", encoding="utf-8") as handle:
            handle.write(render_html(report))
        log.info("report written (%d redacted thumbnails)", len(report.thumbnails))
    return 0 if report.verify.ok else 1


def cmd_validate(args: argparse.Namespace) -> int:
    from privacy.audit_chain import check_chain
    from privacy.data_contract import DataContract, ShardSource
    from schemas.audit import DEADLETTER_FILE, EVENTS_FILE, MANIFEST, RECORD_FILE

    store = _store(args.dir)
    _published(store)
    for flag, path in (("--html", args.html), ("--json", args.json)):
        if path:
            _writable_file(path, flag, store.root)
    try:
        manifest = json.loads(store.read(MANIFEST))
        record = json.loads(store.read(RECORD_FILE))
        deadletters = [json.loads(line) for line in store.read(DEADLETTER_FILE).splitlines()
                       if line.strip()]
    except Exception as exc:  # noqa: BLE001 - altered or missing audit files
        print(f"egoveil: validate: FAILED: the audit files cannot be read "
              f"({type(exc).__name__}); `egoveil audit verify DIR` names the file",
              file=sys.stderr)
        return 1
    chain = check_chain(store.read(EVENTS_FILE)) if store.exists(EVENTS_FILE) else None

    def loader(rel: str):
        import pyarrow.parquet as pq

        def load():
            with store.open(rel) as handle:
                return pq.read_table(handle)
        return load

    shards = [ShardSource(f["path"], f.get("rows") or 0, loader(f["path"]))
              for f in sorted(manifest.get("files", []), key=lambda f: f["path"])
              if f.get("kind") == "latents" and store.exists(f["path"])]
    result = DataContract(record).validate(shards, deadletters,
                                           chain.entries if chain else [])
    if args.html:
        with open(args.html, "w", encoding="utf-8") as handle:
            handle.write(result.to_html())
    if args.json:
        with open(args.json, "wb") as handle:
            handle.write(result.to_json())
    if result.success:
        print(f"egoveil: validate: data contract passed ({result.evaluated} expectations on "
              f"{len(result.batches)} tables)")
        return 0
    print(f"egoveil: validate: data contract FAILED ({result.failed} of {result.evaluated} "
          f"expectations); first: {result.first_failure()}", file=sys.stderr)
    return 1
