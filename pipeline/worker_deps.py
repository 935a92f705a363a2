"""What remote Beam workers need beyond ``--setup_file``.

Beam workers install, in order, the requirements file, the ``--extra_package``
files, then the pipeline's own sdist. face-recognition requires ``dlib``, which
PyPI only has as a source tarball that takes over 30 minutes to compile; staging
a metadata-only ``dlib`` wheel that depends on the prebuilt ``dlib-bin`` satisfies
that requirement before the sdist is installed, so nothing compiles on workers
either (the same stand-in as ``third_party/dlib-from-dlib-bin`` for local installs).
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile

DLIB_VERSION = "20.0.1"
DLIB_BIN_REQUIREMENT = "dlib-bin==20.0.1.post1"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def dlib_standin_wheel(directory: str) -> str:
    """Write ``dlib-<version>-py3-none-any.whl`` (metadata only) and return its path."""
    os.makedirs(directory, exist_ok=True)
    info = f"dlib-{DLIB_VERSION}.dist-info"
    files = {
        f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: dlib\nVersion: {DLIB_VERSION}\n"
                             "Summary: Stand-in that satisfies 'dlib' with the prebuilt dlib-bin "
                             f"wheel\nRequires-Dist: {DLIB_BIN_REQUIREMENT}\n").encode(),
        f"{info}/WHEEL": (b"Wheel-Version: 1.0\nGenerator: egoveil\nRoot-Is-Purelib: true\n"
                          b"Tag: py3-none-any\n"),
    }
    record = [_record_line(name, data) for name, data in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = os.path.join(directory, f"dlib-{DLIB_VERSION}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            wheel.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data)
    return path
