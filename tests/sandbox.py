"""Real read-only folders and real full disks for the fault tests, in a private mount namespace
(`unshare`), so nothing outside the test's own command sees them:

    python tests/sandbox.py ro FOLDER -- COMMAND...        FOLDER bind-mounted read-only
    python tests/sandbox.py tmpfs KIB FOLDER -- COMMAND... a KIB-kilobyte tmpfs over FOLDER

`sandboxed(...)` builds that command line (as root: `unshare --mount`; otherwise also a user
namespace, `--user --map-root-user`). `available()` says whether this machine allows it.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()


def _unshare() -> list[str]:
    extra = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", "--mount", "--propagation", "private", *extra]


def sandboxed(mount: list[str], command: list[str]) -> list[str]:
    """`command` run with `mount` (["ro", FOLDER] or ["tmpfs", KIB, FOLDER]) in place."""
    return [*_unshare(), sys.executable, str(HERE), *map(str, mount), "--", *map(str, command)]


@functools.cache
def available() -> bool:
    """True when a mount namespace with a tmpfs and a read-only bind mount can be made here."""
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    probe = Path(f"/tmp/thoughtlab-sandbox-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(sandboxed(["tmpfs", "64", probe], ["true"]), capture_output=True, timeout=30)
        ro = subprocess.run(sandboxed(["ro", probe], ["true"]), capture_output=True, timeout=30)
        return ok.returncode == 0 and ro.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        probe.rmdir()


def _main(argv: list[str]) -> None:
    sep = argv.index("--")
    mount, command = argv[:sep], argv[sep + 1:]
    if mount[0] == "ro":
        folder = mount[1]
        subprocess.run(["mount", "--bind", folder, folder], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", folder], check=True)
    elif mount[0] == "tmpfs":
        size, folder = mount[1], mount[2]
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}k", "tmpfs", folder], check=True)
    else:
        raise SystemExit(f"unknown mount {mount[0]!r}")
    os.execvp(command[0], command)


if __name__ == "__main__":
    _main(sys.argv[1:])
