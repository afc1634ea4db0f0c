"""Which code produced a result: the package version and the git commit of the checkout.

MLflow runs are tagged with it, and a level's stored result is reused only under the same code
version (``core/study/level_reuse.py``).
"""

import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

_PACKAGE = "ffe_dagster"


@cache
def git_commit() -> str | None:
    """The commit of the checkout this package runs from, or None without git or a repository.

    Read-only (``git rev-parse``), asked once per process; any failure means "unknown".
    """
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit or None


def code_version(commit: str | None = None) -> str:
    """The package version plus the git commit when known, e.g. ``0.1.0+g1a2b3c4d5e6f``."""
    try:
        version = metadata.version(_PACKAGE)
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    return f"{version}+g{commit[:12]}" if commit else version
