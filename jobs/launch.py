"""`accelerate launch`, with the worker's own fate as its exit status.

accelerate's launcher waits for the worker and, when it died, raises an exception (a
`CalledProcessError`, or torch.distributed's `ChildFailedError` for several processes): the
process then exits with code 1 and a traceback, whatever killed the worker. Here the same
launcher runs (same arguments, same environment for the worker) and that exception is decoded:
a worker killed by signal N makes this process exit with 128 + N (the shell's convention),
which the supervisor reports as the signal; a worker's own exit code is passed on.
"""
from __future__ import annotations

import signal
import subprocess
import sys


def worker_returncode(error: BaseException) -> int | None:
    """The worker's return code carried by the launcher's exception (negative: killed by that
    signal), or None when the exception is about something else."""
    if isinstance(error, subprocess.CalledProcessError):          # one process
        return error.returncode
    if getattr(error, "failures", None) and hasattr(error, "get_first_failure"):   # several
        # A rank killed by a signal is the root cause even when another rank, failing on the
        # broken connection, was recorded first.
        codes = [int(f.exitcode) for f in error.failures.values()]
        killed = [c for c in codes if c < 0]
        return killed[0] if killed else int(error.get_first_failure()[1].exitcode)
    return None


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def main(argv: list[str] | None = None) -> int:
    from accelerate.commands.launch import launch_command, launch_command_parser
    args = launch_command_parser().parse_args(argv)
    try:
        launch_command(args)
    except Exception as e:  # noqa: BLE001 - decoded below, re-raised when it is not the worker's fate
        rc = worker_returncode(e)
        if rc is None:
            raise
        if rc < 0:
            print(f"[launch] the worker was killed by {signal_name(-rc)}", file=sys.stderr, flush=True)
            return 128 - rc
        print(f"[launch] the worker exited with code {rc}", file=sys.stderr, flush=True)
        return rc or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
