"""environment.yml (conda) and pyproject.toml (pip) must name the same packages and lower bounds."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge names that differ from PyPI's
NOT_PACKAGES = {"python"}


def _split(requirement: str):
    match = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", requirement)
    name = match.group(1).lower().replace("_", "-")
    return CONDA_TO_PIP.get(name, name), match.group(2).replace(" ", "")


def pyproject_requirements() -> dict:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    own = project["name"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += [r for r in extra if not r.startswith(own)]
    return dict(_split(r) for r in reqs)


def conda_requirements() -> dict:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    reqs = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            reqs += [r for r in dep["pip"] if not r.startswith("-e")]
        else:
            reqs.append(dep)
    pairs = dict(_split(r) for r in reqs)
    return {name: spec for name, spec in pairs.items() if name not in NOT_PACKAGES}


def test_same_packages():
    pip, conda = pyproject_requirements(), conda_requirements()
    assert sorted(pip) == sorted(conda), f"only in pyproject: {set(pip) - set(conda)}; only in environment.yml: {set(conda) - set(pip)}"


def test_same_lower_bounds():
    pip, conda = pyproject_requirements(), conda_requirements()
    differing = {name: (pip[name], conda[name]) for name in pip if name in conda and pip[name] != conda[name]}
    assert not differing, f"version specifiers differ (pyproject, environment.yml): {differing}"


def test_ci_runs_readme_test_command():
    """.ci/run's last command is the test command README's first code block gives."""
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    readme_commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.split("#")[0].strip()]
    ci_commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                   if line.strip() and not line.strip().startswith("#")]
    assert ci_commands[-1] == "make test"
    assert "make test" in readme_commands
