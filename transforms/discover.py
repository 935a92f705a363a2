"""Discovery: input patterns and the JSONL manifest to ``RecordingRequest`` elements.

Patterns go through Beam's ``fileio.MatchAll``, so local paths, globs and object
stores (gs://, s3:// where their extras are installed) work alike. A folder is
searched recursively for the files the input-format registry reads
(``transforms.media.sources``); hidden files are skipped. A manifest line
that cannot be parsed becomes a dead letter; the rest of the manifest goes on.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.fileio import EmptyMatchTreatment
from apache_beam.metrics import Metrics

from privacy import identifiers
from schemas.records import DeadLetter
from schemas.sidecar import RecordingRequest, SidecarError, parse_manifest_line
from schemas.stages import DEADLETTER, Discovered
from transforms.media.sources import discovery_extensions
from transforms.stores.keys import load_key


@dataclass(slots=True, frozen=True)
class InputPattern:
    """A file, glob or folder to read; ``media_only`` skips non-video and hidden files."""

    pattern: str
    media_only: bool = False


def normalize_uri(uri: str) -> str:
    """Absolute, normalized local paths; object-store URIs unchanged."""
    if "://" in uri:
        return uri
    return os.path.normpath(os.path.abspath(os.path.expanduser(uri)))


def _keep(path: str, media_only: bool) -> bool:
    if not media_only:
        return True
    name = posixpath.basename(path.replace("\\", "/"))
    return not name.startswith(".") and name.lower().endswith(discovery_extensions())


class ParseManifestFn(beam.DoFn):
    """Manifest line -> ``RecordingRequest``; bad lines -> dead letters (``bad_manifest``)."""

    def __init__(self, manifest_dir: str, key_file: str | None) -> None:
        self._dir = manifest_dir
        self._key_file = key_file
        self._bad = Metrics.counter("egoveil", "manifest_lines_rejected")

    def setup(self) -> None:
        self._key = load_key(self._key_file)

    def process(self, line: str):
        if not line.strip():
            return
        try:
            request = parse_manifest_line(line)
        except SidecarError as exc:
            self._bad.inc()
            yield beam.pvalue.TaggedOutput(DEADLETTER, DeadLetter(
                input_id=identifiers.manifest_line_id(self._key, line), stage="discover",
                reason="bad_manifest", detail=str(exc)))
            return
        uri = request.uri
        if "://" not in uri and not os.path.isabs(uri):
            uri = os.path.join(self._dir, uri)
        pair = request.pair_uri
        if pair and "://" not in pair and not os.path.isabs(pair):
            pair = os.path.join(self._dir, pair)
        yield dataclasses.replace(request, uri=normalize_uri(uri),
                                  pair_uri=normalize_uri(pair) if pair else None)


def _merge(keyed):
    """One request per URI: the manifest's entry (with its sidecar) wins over a bare match."""
    uri, grouped = keyed
    entries = sorted(grouped["manifest"], key=repr)
    yield entries[0] if entries else RecordingRequest(uri=uri)


class DiscoverRecordings(beam.PTransform):
    """Patterns and an optional manifest -> ``Discovered(requests, deadletters)``.

    Args:
        patterns: files, globs or folders.
        manifest: a JSON Lines manifest, or None.
        key_file: the pseudonym key (for dead-letter ids); None reads the environment.
    """

    def __init__(self, patterns: list[InputPattern], manifest: str | None,
                 key_file: str | None) -> None:
        super().__init__()
        self._patterns = patterns
        self._manifest = manifest
        self._key_file = key_file

    def expand(self, pbegin) -> Discovered:
        matched = []
        if self._patterns:
            for i, pat in enumerate(self._patterns):
                matched.append(
                    pbegin
                    | f"Pattern{i}" >> beam.Create([pat.pattern])
                    | f"Match{i}" >> fileio.MatchAll(EmptyMatchTreatment.ALLOW)
                    | f"Path{i}" >> beam.Map(lambda m: normalize_uri(m.path))
                    | f"Keep{i}" >> beam.Filter(_keep, pat.media_only))
        files = (matched | "FlattenMatches" >> beam.Flatten()) if matched else (
            pbegin | "NoPatterns" >> beam.Create([]))
        if self._manifest:
            manifest_dir = os.path.dirname(normalize_uri(self._manifest)) \
                if "://" not in self._manifest else posixpath.dirname(self._manifest)
            parsed = (pbegin
                      | "ReadManifest" >> beam.io.ReadFromText(self._manifest)
                      | "ParseManifest" >> beam.ParDo(
                          ParseManifestFn(manifest_dir, self._key_file)).with_outputs(
                              DEADLETTER, main="requests"))
            entries, deadletters = parsed.requests, parsed[DEADLETTER]
        else:
            entries = pbegin | "NoManifest" >> beam.Create([])
            deadletters = pbegin | "NoManifestErrors" >> beam.Create([])
        requests = (
            {"files": files | "KeyFiles" >> beam.Map(lambda uri: (uri, None)),
             "manifest": entries | "KeyEntries" >> beam.Map(lambda r: (r.uri, r))}
            | "JoinByUri" >> beam.CoGroupByKey()
            | "Merge" >> beam.FlatMap(_merge))
        return Discovered(requests=requests, deadletters=deadletters)
