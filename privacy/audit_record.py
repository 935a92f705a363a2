"""Keeping paths out of the record of processing (PRIVACY.md 13, 20).

Settings can carry local paths (``yunet:path=/home/someone/models/yunet.onnx``);
the record keeps the file's name only, and the models' hashes identify them.
"""

from __future__ import annotations

import re

# A path inside a setting: after '=' or ':' or at the start, up to ';', ',', '+' or the end.
_PATH_VALUE = re.compile(r"(?P<lead>^|[=:])(?P<path>(?:[A-Za-z]:\\|~/|/|\.{1,2}/)[^;,+]*)"
                         r"|(?P<key>path=)(?P<named>[^;,+]*)")


def _basename(path: str) -> str:
    return re.split(r"[\\/]", path.rstrip("/\\"))[-1] or "<path>"


def _shorten(match: re.Match) -> str:
    if match.group("key"):
        return match.group("key") + _basename(match.group("named"))
    return match.group("lead") + _basename(match.group("path"))


def scrub_paths(value: object) -> object:
    """``value`` with every path inside a string reduced to its last part, recursively."""
    if isinstance(value, str):
        return _PATH_VALUE.sub(_shorten, value)
    if isinstance(value, dict):
        return {k: scrub_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_paths(v) for v in value]
    return value
