"""Where a result came from: the one provenance record of the benchmark's and the experiments' JSON files.

:func:`provenance` returns date, command, git commit and dirty flag, library versions and machine. It imports
neither torch nor Triton: versions are read from the installed distributions, and the GPU is described only
when the caller has already imported torch (the benchmark has; the NumPy-only experiments have not, and
need no GPU).

The git commit
--------------
Read from the environment where the command that ships a copy of the working tree to another machine sets it
(that copy's ``.git``, if any, need not be its own), else from git when this file sits in a git checkout (the
repository's root is the checkout's top level)::

    INTFA_GIT_COMMIT=<40 hex digits>  INTFA_GIT_DIRTY=0|1  python -m intfa.bench --suite decode

``python -m intfa.provenance`` prints those two assignments for the checkout it runs in. The record says
which source gave the commit (``git.source``: "git", "environment" or None).

"Dirty" means that a tracked file outside ``results/`` differs from the commit: untracked files (scratch
outputs, caches) and the results being written are not the code that produced them. A figure or table that
is committed must be regenerated from a clean commit, so that its record names the code that made it; a
record with ``git.dirty: true`` says that the code may differ from ``git.commit``.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import platform
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["GIT_COMMIT_ENV", "GIT_DIRTY_ENV", "REPO_ROOT", "git_state", "provenance"]

#: The repository's root: the directory holding ``intfa/`` and ``sim/``.
REPO_ROOT = Path(__file__).resolve().parents[1]
#: Environment variables read where git cannot say (a copy of the tree without ``.git``).
GIT_COMMIT_ENV = "INTFA_GIT_COMMIT"
GIT_DIRTY_ENV = "INTFA_GIT_DIRTY"
#: Distributions whose versions are recorded (None where not installed or not importable).
VERSIONED = ("numpy", "ml_dtypes", "pandas", "matplotlib", "seaborn", "torch", "triton", "transformers")
#: Paths left out of the dirty check: what the runs write.
_NOT_CODE = (":!results",)
_TRUTHY, _FALSY = ("1", "true", "yes"), ("0", "false", "no")


def _run(args: list[str], cwd: Path) -> str | None:
    """stdout of a command, stripped; None when it cannot run or fails."""
    try:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git_from_checkout(root: Path) -> dict | None:
    """Commit and dirty flag from git, or None where ``root`` is not the top level of a git checkout."""
    head = _run(["git", "rev-parse", "--show-toplevel", "HEAD"], root)
    if head is None:
        return None
    top, _, commit = head.partition("\n")
    # Inside some other checkout (a copy of the tree placed in another repository), git would describe that one.
    if Path(top).resolve() != root.resolve():
        return None
    status = _run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *_NOT_CODE], root)
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status), "source": "git"}


def _git_from_environment(environ) -> dict | None:
    """Commit and dirty flag from INTFA_GIT_COMMIT / INTFA_GIT_DIRTY, or None where the commit is not set.

    Raises ValueError naming the variable whose value is malformed.
    """
    commit = environ.get(GIT_COMMIT_ENV, "").strip()
    if not commit:
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{7,64}", commit):
        raise ValueError(f"{GIT_COMMIT_ENV}: expected a git commit hash (7 to 64 hex digits), got {commit!r}")
    dirty_text = environ.get(GIT_DIRTY_ENV, "").strip().lower()
    if dirty_text in _TRUTHY:
        dirty = True
    elif dirty_text in _FALSY:
        dirty = False
    elif not dirty_text:
        dirty = None  # not said: unknown, never assumed clean
    else:
        raise ValueError(f"{GIT_DIRTY_ENV}: expected one of {_TRUTHY + _FALSY} (or unset), got {dirty_text!r}")
    return {"commit": commit.lower(), "dirty": dirty, "source": "environment"}


def git_state(root: str | os.PathLike = REPO_ROOT, environ=None) -> dict:
    """``{"commit", "dirty", "source"}`` of the code in ``root``: from the environment where INTFA_GIT_COMMIT is
    set (with ``checkout_commit`` added where a git checkout names another commit), else from git, else Nones.

    dirty : a tracked file outside ``results/`` differs from the commit (untracked files do not count).
    environ : the environment to read (default ``os.environ``).
    """
    # The environment first: whoever sets it shipped a copy of the tree and knows its commit. A copy may carry a
    # .git that is not its own (the device machine's held the session's first commit, and called every later tree
    # "dirty" against it: bench-full.json of 4d703a2 said 1979d00).
    from_env = _git_from_environment(os.environ if environ is None else environ)
    from_git = _git_from_checkout(Path(root))
    if from_env is not None:
        if from_git is not None and not from_git["commit"].startswith(from_env["commit"]):
            # Both said, and they differ: keep the checkout's too, so that a variable left exported by mistake
            # shows in the record instead of silently renaming the run.
            from_env["checkout_commit"] = from_git["commit"]
        return from_env
    return from_git or {"commit": None, "dirty": None, "source": None}


def _versions() -> dict:
    """Python's and each importable distribution's version, without importing any of them."""
    versions = {"python": platform.python_version()}
    for package in VERSIONED:
        try:
            importable = importlib.util.find_spec(package) is not None
        except (ImportError, ValueError):  # blocked, or a half-imported module
            importable = False
        try:
            versions[package] = metadata.version(package) if importable else None
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _gpu(torch) -> dict | None:
    """GPU 0 as torch sees it, with the driver; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", "0"], Path.cwd())
    return {
        "name": torch.cuda.get_device_name(0),
        "multiprocessors": props.multi_processor_count,
        "memory_bytes": props.total_memory,
        "l2_bytes": getattr(props, "L2_cache_size", None),
        "driver": driver,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


def _default_command() -> str | None:
    """This process's command line, as ``python -m package ...`` when it was started with ``-m``."""
    if not sys.argv or not sys.argv[0]:
        return None
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        args = [sys.executable, "-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]]
    else:
        args = [sys.executable, *sys.argv]
    return shlex.join(args)


def provenance(command: str | None = None) -> dict:
    """The record of this process: date (UTC), command, git, versions, machine.

    command : the command line to record (default: this process's own).
    Returns ``{"date", "command", "git": {"commit", "dirty", "source"}, "versions": {...}, "machine": {"host",
    "platform", "processor", "cpu_count", "gpu"}}``; ``machine.gpu`` is None unless torch was already imported
    and sees a CUDA GPU.
    """
    torch = sys.modules.get("torch")  # never imported here: a NumPy-only run records no GPU
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": _default_command() if command is None else command,
        "git": git_state(),
        "versions": _versions(),
        "machine": {
            "host": platform.node(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "gpu": _gpu(torch) if torch is not None and hasattr(torch, "cuda") else None,
        },
    }


def main() -> int:
    """Print ``INTFA_GIT_COMMIT=... INTFA_GIT_DIRTY=...`` for this checkout, to prefix a command run on a copy."""
    state = _git_from_checkout(REPO_ROOT)
    if state is None:
        print(f"intfa.provenance: {REPO_ROOT} is not a git checkout; nothing to export", file=sys.stderr)
        return 2
    dirty = {True: "1", False: "0", None: ""}[state["dirty"]]
    print(f"{GIT_COMMIT_ENV}={state['commit']} {GIT_DIRTY_ENV}={dirty}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
