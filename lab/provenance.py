"""Where a run came from: the project's git commit and the versions of the main packages,
stored with every run and eval."""
from __future__ import annotations

from pathlib import Path

_GIT: str | None = None


def git_commit() -> str:
    """The project's git commit (with '+dirty' when the tree has changes), read once."""
    global _GIT
    if _GIT is None:
        import subprocess
        root = Path(__file__).resolve().parent.parent
        try:
            sha = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, capture_output=True,
                                 text=True, timeout=5).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()
            _GIT = (sha + ("+dirty" if dirty else "")) if sha else "unknown"
        except (OSError, subprocess.SubprocessError):
            _GIT = "unknown"
    return _GIT


def package_versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "accelerate", "duckdb", "streamlit"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out
