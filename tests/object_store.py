"""A Beam filesystem with a URI scheme, over a local folder: the ``://`` paths of egoveil
(object stores: no local paths, no renames in place, no locks) run in tests without a cloud.

Beam finds filesystems by subclass, so importing this module registers the
``egoveiltest://`` scheme; ``egoveiltest:///tmp/x`` is the local ``/tmp/x``. It is
Beam's LocalFileSystem with every path translated, not a stand-in for egoveil code.
"""

from __future__ import annotations

import os
import shutil

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

SCHEME = "egoveiltest"
PREFIX = f"{SCHEME}://"


def uri(local_path: str) -> str:
    return PREFIX + str(local_path)


def _local(path: str) -> str:
    return path[len(PREFIX):] if path.startswith(PREFIX) else path


def _remote(path: str) -> str:
    return path if path.startswith(PREFIX) else PREFIX + path


class PrefixedLocalFileSystem(LocalFileSystem):
    """Files of the local disk under the ``egoveiltest://`` scheme."""

    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        return _remote(super().join(_local(basepath), *paths))

    def split(self, path):
        head, tail = super().split(_local(path))
        return _remote(head), tail

    def mkdirs(self, path):
        return super().mkdirs(_local(path))

    def _url_dirname(self, url_or_path):
        return _remote(super()._url_dirname(_local(url_or_path)))

    def _list(self, dir_or_prefix):
        root = _local(dir_or_prefix)
        if not os.path.exists(root):
            return
        for folder, _, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                try:
                    yield FileMetadata(_remote(path), os.path.getsize(path),
                                       os.path.getmtime(path))
                except OSError:
                    continue  # removed while listing

    def create(self, path, *args, **kwargs):
        return super().create(_local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(_local(path), *args, **kwargs)

    def copy(self, sources, destinations):
        return super().copy([_local(p) for p in sources], [_local(p) for p in destinations])

    def rename(self, sources, destinations):
        return super().rename([_local(p) for p in sources], [_local(p) for p in destinations])

    def exists(self, path):
        return super().exists(_local(path))

    def size(self, path):
        return super().size(_local(path))

    def last_updated(self, path):
        return super().last_updated(_local(path))

    def checksum(self, path):
        return super().checksum(_local(path))

    def metadata(self, path):
        meta = super().metadata(_local(path))
        return FileMetadata(_remote(meta.path), meta.size_in_bytes, meta.last_updated_in_seconds)

    def delete(self, paths):
        for path in map(_local, paths):
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
            else:
                raise OSError("no such file")
