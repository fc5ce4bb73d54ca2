"""What scripts/setup.sh installs resolves on the public package index, as a fresh Linux machine sees it.

On the project's CPU machines pip takes a CPU build of torch that lies on disk; that build has no Triton or
CUDA dependencies, so `make test` here never meets the public torch wheel's own pins (torch 2.13.0 pins
triton==3.7.1, which a `triton<3.7` requirement once made unresolvable). These tests ask pip to resolve
setup.sh's own requirement lines (``scripts/setup.sh --print-requirements``, the one place they are written)
on the public index alone::

    PIP_CONFIG_FILE=/dev/null python -m pip --isolated install --dry-run --ignore-installed ...

``--isolated`` drops environment variables and the user's configuration, PIP_CONFIG_FILE=os.devnull every
configuration file (a local index, find-links, a constraint), ``--ignore-installed`` this venv's packages (its
CPU torch would satisfy ``torch==2.13.0``). They need the network and skip, saying why, without it.

The index reached here serves no separate wheel metadata (PEP 658), so pip reads each wheel's metadata by HTTP
range requests (``--use-feature=fast-deps``): torch's dependency tree (about 30 wheels) takes 25-65 s, the whole
set-up (about 150) ~3 min. The default test resolves the torch pin with the project's own torch and Triton
requirements, the pairing that only the public wheel exercises (everything else setup.sh installs from the
same public index on every CI run); INTFA_RESOLVE_ALL=1 resolves setup.sh's lines whole.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tomllib
import urllib.request
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_INDEX = "https://pypi.org/simple/"
MIN_PIP = Version("26")  # pip 23.2's range-request reader took 2.5 min for torch's tree (pip 26: ~35 s)
RESOLVE_TIMEOUT_S = 300  # 25-65 s here for torch's tree; past this the index is too slow to judge
NETWORK_ERRORS = ("Max retries exceeded", "Temporary failure in name resolution", "Network is unreachable",
                  "Connection refused", "Read timed out", "ConnectionError", "ProxyError")


def setup_requirement_lines() -> list[str]:
    """The requirement lines scripts/setup.sh installs (its --print-requirements), e.g. 'torch==2.13.0'."""
    printed = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), "--print-requirements"],
                             capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in printed.splitlines() if line.strip()]


def setup_torch_requirement() -> str:
    """setup.sh's torch line: the one requirement (not an option such as -e) that names torch."""
    lines = [line for line in setup_requirement_lines()
             if not line.startswith("-") and Requirement(line).name == "torch"]
    assert len(lines) == 1, f"scripts/setup.sh --print-requirements: expected one torch line, got {lines}"
    return lines[0]


def project_requirements(names: set[str]) -> list[str]:
    """pyproject.toml's requirements (core and every extra) on the packages ``names``, as written there."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    written = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        written += extra
    return [r for r in written if Requirement(r).name in names]


def pip_resolve(args: list[str], report: Path) -> dict[str, str]:
    """Resolve ``args`` (requirement strings and options) on the public index alone; {name: version} to install.

    Skips when the index is unreachable, pip is too old to read metadata by range requests in time, or the
    network fails mid-way; fails with pip's own words when the requirements cannot be resolved together.
    """
    if Version(version("pip")) < MIN_PIP:
        pytest.skip(f"pip {version('pip')} here: reading the public wheels' metadata takes minutes before pip "
                    f"{MIN_PIP} (scripts/setup.sh installs a newer one)")
    try:
        urllib.request.urlopen(PUBLIC_INDEX + "pip/", timeout=10).close()
    except OSError as error:
        pytest.skip(f"the public package index {PUBLIC_INDEX} is unreachable: {error}")
    command = [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed",
               "--use-feature=fast-deps", "--report", str(report), *args]
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull)
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=RESOLVE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip did not finish in {RESOLVE_TIMEOUT_S} s (a slow index?): {shlex.join(command)}")
    said = done.stdout + done.stderr
    if done.returncode != 0 and "ResolutionImpossible" not in said and any(e in said for e in NETWORK_ERRORS):
        pytest.skip(f"the network failed while pip resolved: {said[-500:]}")
    assert done.returncode == 0, f"PIP_CONFIG_FILE={os.devnull} {shlex.join(command)}\n{said[-4000:]}"
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}


def test_setup_prints_what_it_installs():
    lines = setup_requirement_lines()
    assert setup_torch_requirement() in lines
    assert "-e .[all]" in lines, f"expected the project with every extra, editable; got {lines}"


def test_torch_pin_and_project_triton_resolve_on_public_index(tmp_path):
    """The public wheel of setup.sh's torch brings its own Triton pin; the project's ranges must admit it."""
    torch_line = setup_torch_requirement()
    ours = project_requirements({"torch", "triton"})
    resolved = pip_resolve([torch_line, *ours], tmp_path / "report.json")
    pinned = Requirement(torch_line)
    assert pinned.specifier.contains(resolved["torch"]) and "+" not in resolved["torch"], (
        f"expected the public wheel of {torch_line}, got torch {resolved['torch']}")
    # The public Linux wheel depends on Triton (a CPU build does not): seeing it proves the public wheel was read.
    assert "triton" in resolved, f"{torch_line} from the public index brought no triton: {sorted(resolved)}"
    for requirement in map(Requirement, ours):
        assert requirement.specifier.contains(resolved[requirement.name]), (
            f"pip chose {requirement.name} {resolved[requirement.name]}, outside pyproject's {requirement}")


@pytest.mark.skipif(os.environ.get("INTFA_RESOLVE_ALL") != "1",
                    reason="resolves ~150 wheels (~3 min on an index without PEP 658 metadata); "
                           "set INTFA_RESOLVE_ALL=1 to run it")
def test_setup_resolves_whole_on_public_index(tmp_path):
    """setup.sh's lines as they are (torch pin and `-e .[all]`), resolved together as a fresh machine would."""
    args = [arg for line in setup_requirement_lines() for arg in shlex.split(line)]
    resolved = pip_resolve(args, tmp_path / "report.json")
    assert "int-flashattention" in resolved and "triton" in resolved and "jupyterlab" in resolved
    assert Requirement(setup_torch_requirement()).specifier.contains(resolved["torch"])
