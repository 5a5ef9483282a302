"""The first process of every job: waits for a device slot (the queue), launches the worker
through `accelerate launch` with explicit flags, and records how it ended.

Slots are `flock`ed files under <data_dir>/slots: one per GPU, and THOUGHTLAB_CPU_JOBS
(default 1) for CPU jobs. A lock dies with its holder, so a killed job never blocks the queue.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobs.manager import ROOT, _child_env, gpu_count, read_log_tail
from jobs.queue import is_next_for_slot, slot_phase
from jobs.topology import LAUNCHER, job_topology, worker_command
from lab.store import ACTIVE, Store, now

CANCELLED = False


def _on_term(signum, frame) -> None:  # noqa: ARG001
    global CANCELLED
    CANCELLED = True


def acquire_slots(data_dir: Path, kind: str, count: int, total: int, store: Store,
                  run_id: str) -> tuple[list[int] | None, list[int] | None]:
    """Block until this job is first in line (jobs/queue.py) and `count` of the `total` slots
    of `kind` are free; return their fds and indices (None, None when cancelled)."""
    folder = data_dir / "slots"
    folder.mkdir(parents=True, exist_ok=True)
    store.update_run(run_id, phase=slot_phase(kind))
    last_beat = 0.0
    while True:
        held = []
        # An earlier job waiting for this kind of slot gets the free ones first (FIFO).
        for i in range(total if is_next_for_slot(store, run_id, kind) else 0):
            fd = os.open(folder / f"{kind}-{i}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append((i, fd))
                if len(held) == count:
                    return [fd for _, fd in held], [i for i, _ in held]
            except BlockingIOError:
                os.close(fd)
        for _, fd in held:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        if CANCELLED:
            return None, None
        if time.monotonic() - last_beat > 5:
            store.update_run(run_id, heartbeat_at=now())
            last_beat = time.monotonic()
        time.sleep(1.0)


def wait_for_dependencies(store: Store, run_id: str, after: list[str], require_finished: bool = True) -> bool:
    """Wait until the runs in `after` have ended. An evaluation (require_finished) needs them
    finished and is cancelled otherwise; a training run that only reads their step counts
    (checkpoint_steps_of) starts whatever their outcome."""
    from jobs.manager import reap
    after = list(dict.fromkeys(after))
    while after:
        reap(store.data_dir)
        states = {r: (store.get_run(r) or {}).get("status", "deleted") for r in after}
        ended = [r for r, s in states.items() if s not in ACTIVE]
        if all(s == "finished" for s in states.values()) or (not require_finished and len(ended) == len(after)):
            store.update_run(run_id, phase="")
            return True
        bad = [r for r in ended if states[r] != "finished"]
        if (bad and require_finished) or CANCELLED:
            why = "cancelled while waiting" if CANCELLED else \
                f"run {bad[0]} it depends on ended as {states[bad[0]]}"
            store.set_status_if(run_id, ACTIVE, status="cancelled", finished_at=now(), error=why)
            return False
        store.update_run(run_id, heartbeat_at=now(), phase=f"waiting for {len(after) - len(ended)} run(s) to end")
        time.sleep(2.0)
    return True


def cpu_slots() -> int:
    """CPU jobs allowed at once (THOUGHTLAB_CPU_JOBS, default 1)."""
    try:
        return max(1, int(os.environ.get("THOUGHTLAB_CPU_JOBS", "1")))
    except ValueError:
        return 1


def cpu_threads_per_job() -> int:
    """The cores split between the CPU slots: oversubscribed OpenMP threads slow every job down."""
    return max(1, (os.cpu_count() or 1) // cpu_slots())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_id")
    ap.add_argument("--data-dir", default="data")
    args = ap.parse_args(argv)
    data_dir = Path(args.data_dir)
    store = Store(data_dir)
    signal.signal(signal.SIGTERM, _on_term)
    run = store.require_run(args.run_id)
    cfg = json.loads(run["config"] or "{}")
    if not wait_for_dependencies(store, args.run_id, cfg.get("after") or [],
                                 require_finished=run.get("kind") != "train"):
        return 0
    device = cfg.get("device", "auto")
    topo = job_topology(cfg, run.get("kind"), gpu_count() if device in ("auto", "gpu") else 0)
    if topo.gpus:
        fds, slots = acquire_slots(data_dir, "gpu", topo.gpus, gpu_count(), store, args.run_id)
    else:
        # Every process of a CPU job holds a CPU slot (all of them when it has more processes
        # than there are slots) and splits the cores of the slots it holds.
        n_slots = min(topo.processes, cpu_slots())
        topo.threads = max(1, n_slots * cpu_threads_per_job() // topo.processes)
        fds, slots = acquire_slots(data_dir, "cpu", n_slots, cpu_slots(), store, args.run_id)
    if fds is None:
        store.set_status_if(args.run_id, ACTIVE, status="cancelled", finished_at=now(),
                            error="cancelled while queued")
        return 0
    cmd = worker_command(run, cfg, data_dir, topo)
    env = _child_env()
    if topo.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, slots))
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["OMP_NUM_THREADS"] = str(topo.threads)
    started = store.set_status_if(args.run_id, ["queued"], status="running", started_at=now(), phase="",
                                  heartbeat_at=now(), attempts=int(run.get("attempts") or 0) + 1)
    if not started or CANCELLED:
        store.set_status_if(args.run_id, ACTIVE, status="cancelled", finished_at=now())
        return 0
    print(f"[supervisor] slot {slots}; launching: {' '.join(cmd)}", flush=True)
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    while child.poll() is None:
        try:
            child.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
    rc = child.returncode
    if CANCELLED:
        # `accelerate launch` dies at once on SIGTERM; the worker may still be flushing the
        # steps it logged. The run counts as ended only once that is done.
        _wait_for_exit((store.get_run(args.run_id) or {}).get("worker_pid"), timeout=20.0)
        store.set_status_if(args.run_id, ACTIVE, status="cancelled", finished_at=now(),
                            error="cancelled by the user")
    elif rc != 0:
        why = describe_exit(rc, launcher=cmd[1:3] == LAUNCHER)
        current = store.get_run(args.run_id) or {}
        if rc > 128 and current.get("status") == "failed" and why not in (current.get("error") or ""):
            # One rank killed by a signal: the other ranks fail on the broken connection and
            # record that first, but the signal is the cause.
            store.update_run(args.run_id, error=why + "\n" + (current.get("error") or ""))
        else:
            store.set_status_if(args.run_id, ACTIVE, status="failed", finished_at=now(),
                                error=why + "\n" + read_log_tail(run.get("log_path"), 5))
    else:
        store.set_status_if(args.run_id, ACTIVE, status="finished", finished_at=now())
    print(f"[supervisor] worker exited with {rc}", flush=True)
    return 0


def _wait_for_exit(pid, timeout: float) -> None:
    end = time.monotonic() + timeout
    while pid and time.monotonic() < end:
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.2)


def describe_exit(rc: int, launcher: bool = False) -> str:
    """What a non-zero return code of the job's process means. Through the launcher
    (jobs/launch.py), 128 + N is the worker killed by signal N and a negative code is the
    launcher itself killed; without it (evaluations), a negative code is the worker's signal."""
    if rc > 128 or (rc < 0 and not launcher):
        return f"The worker was killed by signal {_signal_text(rc - 128 if rc > 128 else -rc)}."
    if rc < 0:
        return f"The job's launcher (accelerate launch) was killed by signal {_signal_text(-rc)}."
    return f"The worker exited with code {rc}."


def _signal_text(sig: int) -> str:
    from jobs.launch import signal_name
    hint = " (the out-of-memory killer or `kill -9`)" if sig == signal.SIGKILL else ""
    return signal_name(sig) + hint


if __name__ == "__main__":
    sys.exit(main())
