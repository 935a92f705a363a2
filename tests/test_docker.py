"""Sanity of the SDK container Dockerfiles (docker/), read as text.

No Docker daemon is needed or used: these checks catch what breaks a build or a worker
before anyone builds (a COPY of a path that is not there or is ignored, a package
setup.py ships but the image lacks, a Beam SDK image of another version than the
project allows, a missing worker entrypoint). They do not replace building the images.
"""

from __future__ import annotations

import fnmatch
import os
import re

import pytest
from packaging.requirements import Requirement

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILES = ("docker/Dockerfile.cpu", "docker/Dockerfile.gpu")
BEAM_IMAGE = "apache/beam_python3.11_sdk"
BOOT = "/opt/apache/beam/boot"


def instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines, current = [], ""
    with open(os.path.join(REPO, path)) as handle:
        for raw in handle:
            line = raw.rstrip("\n")
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.lstrip().startswith("#"):
                continue  # a comment inside a continued instruction
            if line.endswith("\\"):
                current += line[:-1] + " "
                continue
            lines.append(current + line)
            current = ""
    assert not current, f"{path} ends inside a continued line"
    out = []
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def args_of(steps) -> dict:
    """ARG defaults (global and per stage; a later default overrides an earlier one)."""
    found = {}
    for word, rest in steps:
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            if value:
                found[name] = value
    return found


def expand(text: str, values: dict) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), text)


def dockerignore() -> list[str]:
    with open(os.path.join(REPO, ".dockerignore")) as handle:
        return [line.strip() for line in handle if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        bare = pattern[3:] if pattern.startswith("**/") else pattern
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(prefix.split("/")[-1], bare):
                return True
    return False


def beam_requirement() -> Requirement:
    with open(os.path.join(REPO, "setup.py")) as handle:
        spec = re.search(r'"(apache-beam[^"]*)"', handle.read()).group(1)
    return Requirement(spec)


def setup_packages() -> set[str]:
    with open(os.path.join(REPO, "setup.py")) as handle:
        include = re.search(r"include=\[([^\]]*)\]", handle.read()).group(1)
    return {name.split(".")[0] for name in re.findall(r'"([\w.*]+)"', include)}


def torch_pin() -> str:
    with open(os.path.join(REPO, "requirements.txt")) as handle:
        return re.search(r"^torch==(\S+)", handle.read(), re.M).group(1)


@pytest.fixture(params=DOCKERFILES)
def dockerfile(request):
    return request.param, instructions(request.param)


def test_copy_sources_exist_and_are_not_ignored(dockerfile):
    path, steps = dockerfile
    patterns = dockerignore()
    copied = []
    for word, rest in steps:
        if word not in ("COPY", "ADD") or "--from=" in rest:
            continue
        *sources, _dest = [p for p in rest.split() if not p.startswith("--")]
        for source in sources:
            assert os.path.exists(os.path.join(REPO, source)), f"{path}: COPY {source} missing"
            assert not ignored(source, patterns), f"{path}: COPY {source} is in .dockerignore"
            copied.append(source.rstrip("/"))
    # Every package setup.py ships, and what requirements.txt installs from the tree.
    assert setup_packages() <= set(copied), f"{path} lacks packages of setup.py"
    assert {"requirements.txt", "setup.py"} <= set(copied)
    assert any(c.startswith("third_party/dlib-from-dlib-bin") for c in copied)


def test_beam_sdk_image_version_is_one_the_project_allows(dockerfile):
    path, steps = dockerfile
    values = args_of(steps)
    version = values["BEAM_VERSION"]
    images = [expand(rest.split()[0], values) for word, rest in steps if word == "FROM"]
    assert f"{BEAM_IMAGE}:{version}" in images, (path, images)
    requirement = beam_requirement()
    assert requirement.specifier.contains(version), (version, str(requirement))
    # The image installs that very version, so no dependency can move it off the SDK's.
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert re.search(r'apache-beam(\[[\w,]+\])?==\$\{BEAM_VERSION\}', runs), path


def test_torch_and_requirements_match_the_project(dockerfile):
    path, steps = dockerfile
    assert args_of(steps)["TORCH_VERSION"] == torch_pin()
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "-r requirements.txt" in runs and '"torch==${TORCH_VERSION}"' in runs


def test_workers_start_through_beams_boot(dockerfile):
    path, steps = dockerfile
    entrypoints = [rest for word, rest in steps if word == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1] == f'["{BOOT}"]', path
    froms = [rest.split() for word, rest in steps if word == "FROM"]
    final_base = expand(froms[-1][0], args_of(steps))
    if not final_base.startswith(f"{BEAM_IMAGE}:"):
        # A foreign base needs the boot program copied from Beam's own image ...
        stages = {parts[2]: expand(parts[0], args_of(steps)) for parts in froms
                  if len(parts) == 3 and parts[1].upper() == "AS"}
        copies = [rest.split() for word, rest in steps if word == "COPY" and "--from=" in rest]
        assert any(stages.get(c[0].split("=", 1)[1], "").startswith(f"{BEAM_IMAGE}:")
                   and c[1:] == ["/opt/apache/beam", "/opt/apache/beam"] for c in copies), path
        # ... and, packages being in a virtual environment, boot must run in it rather
        # than make its own (which would not see them).
        env = " ".join(rest for word, rest in steps if word == "ENV")
        assert "RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1" in env, path


def test_both_images_share_the_beam_and_torch_versions():
    cpu, gpu = (args_of(instructions(path)) for path in DOCKERFILES)
    assert cpu["BEAM_VERSION"] == gpu["BEAM_VERSION"]
    # The launcher's Beam (pinned in requirements.txt) is the workers' Beam.
    pins = re.findall(r"^apache-beam==(\S+)$", open(os.path.join(REPO, "requirements.txt")).read(),
                      re.M)
    assert pins == [cpu["BEAM_VERSION"]]
    assert cpu["TORCH_VERSION"] == gpu["TORCH_VERSION"]


def test_the_gpu_image_installs_cuda_builds():
    steps = instructions("docker/Dockerfile.gpu")
    bases = [expand(rest.split()[0], args_of(steps)) for word, rest in steps if word == "FROM"]
    assert "cuda" in bases[-1] and "runtime" in bases[-1]
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "torch.version.cuda" in runs and ".[gpu]" in runs
