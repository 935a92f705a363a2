"""What Beam workers need: ``--setup_file``, the dlib stand-in, quiet local workers.

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
import tempfile
import zipfile

from apache_beam.options.pipeline_options import (
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    WorkerOptions,
)

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


def _is_loopback(options: PipelineOptions) -> bool:
    env = options.view_as(PortableOptions).environment_type
    return (env or "").upper() == "LOOPBACK"


def _container_given(options: PipelineOptions) -> bool:
    """Whether the workers run an SDK container the user named (Dataflow's option, or a
    portable runner's DOCKER environment)."""
    if options.view_as(WorkerOptions).sdk_container_image:
        return True
    portable = options.view_as(PortableOptions)
    if (portable.environment_type or "").upper() != "DOCKER":
        return False
    return bool(portable.environment_config
                or portable.lookup_environment_option("docker_container_image"))


def stage_for_workers(options: PipelineOptions, local_runner: bool, repo_root: str) -> None:
    """Set the options that let ``options``' runner execute the graph's code on its workers.

    - Remote workers (Dataflow, Flink, Spark with a DOCKER, PROCESS or EXTERNAL
      environment) install this repository through ``--setup_file`` and the dlib
      stand-in through ``--extra_package``, unless they run a container the user
      named (``--sdk_container_image``, or ``--environment_type DOCKER`` with
      ``--environment_config IMAGE``), which is then taken to be an egoveil image
      (``docker/``) that already holds everything: installing the sdist again at
      every worker start would be slow and would need a package index.
    - ``--environment_type LOOPBACK`` runs the SDK workers inside this process, which
      already imports everything: staging would only build an sdist (from the
      source tree, which need not be writable) for nobody to install.
    - Local runners (DirectRunner, Prism) get nothing staged, whatever the output's
      filesystem: their multi-process workers run on this machine with this
      interpreter. Their stderr is this console, and Beam's
      SDK harness logs every pipeline option it cannot parse (``--input``,
      ``--key_file`` with their paths) at WARNING and all options at INFO. egoveil's
      console names flags, never paths: unless the user chose a worker log level,
      workers log warnings, and the options parser only errors.
    """
    if local_runner:
        worker = options.view_as(WorkerOptions)
        if worker.default_sdk_harness_log_level is None \
                and worker.sdk_harness_log_level_overrides is None:
            worker.default_sdk_harness_log_level = "WARNING"
            worker.sdk_harness_log_level_overrides = {
                "apache_beam.options.pipeline_options": "ERROR"}
        return
    if _is_loopback(options) or _container_given(options):
        return
    setup = options.view_as(SetupOptions)
    if not setup.setup_file and os.path.isfile(os.path.join(repo_root, "setup.py")):
        setup.setup_file = os.path.join(repo_root, "setup.py")
    wheel = dlib_standin_wheel(tempfile.mkdtemp(prefix="egoveil-worker-deps-"))
    setup.extra_packages = [*(setup.extra_packages or []), wheel]
