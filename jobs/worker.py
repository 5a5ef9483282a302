"""The process that does a job's work (started by the supervisor via `accelerate launch`).
It owns the run's status while it runs: finished, failed (with a message for the user) or
cancelled (SIGTERM)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from lab.errors import LabError, storage_full
from lab.store import ACTIVE, Store, now


class Cancelled(BaseException):
    """Raised from the SIGTERM handler so the job stops at once, wherever it is."""


def _on_term(signum, frame):  # noqa: ARG001
    raise Cancelled()


def _heartbeat(store: Store, run_id: str, stop: threading.Event) -> None:
    while not stop.wait(5.0):
        try:
            store.update_run(run_id, heartbeat_at=now())
        except Exception:  # noqa: BLE001 - a missed heartbeat is harmless
            pass


def run_job(store: Store, run: dict) -> None:
    cfg = json.loads(run["config"])
    if run.get("kind") == "eval" and cfg.get("benchmark") == "nt-reasoning":
        from lab.nt_reasoning import run_job as run_nt_reasoning
        run_nt_reasoning(store, cfg, progress_callback=_progress_to_run(store, run["id"]))
        return
    if run.get("kind") == "eval" and cfg.get("specs"):      # several benchmarks, one model
        from lab.evaluation import EvalSpec
        from lab.evaluation.runner import run_eval_job
        run_eval_job(store, run["id"], [EvalSpec.from_dict(s) for s in cfg["specs"]],
                     progress_callback=_progress_to_run(store, run["id"]))
        return
    if run.get("kind") == "eval":
        from lab.evaluation import EvalSpec, run_eval
        from lab.models import pin_steps_of
        fields = {f.name for f in dataclasses.fields(EvalSpec)}   # the job config adds queue keys
        spec = EvalSpec.from_dict({k: v for k, v in cfg.items() if k in fields})
        pinned = pin_steps_of(spec.model, store.data_dir)
        if pinned != spec.model:      # record the command that re-runs exactly this eval
            store.update_run(run["id"], command=(run.get("command") or "").replace(spec.model, pinned))
            spec.model = pinned
        run_eval(spec, store, eval_id=run["id"], progress_callback=_progress_to_run(store, run["id"]))
        return
    from lab.config import RunConfig
    from lab.train import train
    train(RunConfig.from_dict(cfg), run["id"], store)


def _progress_to_run(store: Store, run_id: str):
    """A progress callback that moves the run's step (of 100) and phase: the Runs page turns
    them into a progress bar with an ETA. Written at most every 2 s."""
    last = [0.0]

    def progress(frac: float, message: str) -> None:
        if time.monotonic() - last[0] > 2 or frac >= 1:
            last[0] = time.monotonic()
            store.update_run(run_id, step=int(frac * 100), phase=message[:200], heartbeat_at=now())
    return progress


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_id")
    ap.add_argument("--data-dir", default="data")
    args = ap.parse_args(argv)
    store = Store(args.data_dir)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    run = store.require_run(args.run_id)
    signal.signal(signal.SIGTERM, _on_term)
    stop = threading.Event()
    if main_rank:
        # Launched outside the supervisor (several machines, jobs/multinode.py): it starts here.
        store.set_status_if(args.run_id, ["queued"], status="running", started_at=now(), phase="")
        store.update_run(args.run_id, worker_pid=os.getpid(), heartbeat_at=now())
        threading.Thread(target=_heartbeat, args=(store, args.run_id, stop), daemon=True).start()
    status, error, code = "finished", None, 0
    try:
        run_job(store, run)
    except Cancelled:
        status, error, code = _stopped(store, run)
    except LabError as e:
        status, error, code = "failed", str(e), 1
    except Exception as e:  # noqa: BLE001 - every crash becomes a readable failed run
        traceback.print_exc()
        full = storage_full(store.data_dir, e, "write")
        status, error, code = "failed", str(full) if full else _explain(e), 1
    finally:
        stop.set()
    print(f"[worker] {status or 'stopped by the launcher'}" + (f": {error}" if error else ""), flush=True)
    # A failure on any rank is recorded by that rank: the launcher then stops the other ranks
    # with SIGTERM, which rank 0 would otherwise record as a cancel.
    if status is not None and (main_rank or status == "failed"):
        try:
            store.set_status_if(args.run_id, ACTIVE, status=status, error=error, finished_at=now())
        except LabError as e:     # e.g. a full disk: the log keeps the outcome, the supervisor retries
            print(f"[worker] could not record the status: {e}", flush=True)
            code = code or 1
    return code


def _stopped(store: Store, run: dict) -> tuple[str | None, str | None, int]:
    """What a SIGTERM means. A cancel from the lab leaves a marker file first (manager.cancel).
    Without it, in a job of several processes, the launcher is stopping the other ranks
    because one of them died: the supervisor, when there is one, reports that rank's fate
    (status None: record nothing); a run launched on several machines has none, so this rank
    records the failure."""
    if cancel_requested(store.data_dir, run["id"]) or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return "cancelled", "cancelled by the user", 0
    if run.get("pid") is not None:
        return None, None, 1
    return "failed", "stopped by its launcher: another process of the job ended (see the job logs)", 1


def cancel_marker(data_dir: str | Path, run_id: str) -> Path:
    return Path(data_dir) / "runs" / run_id / "CANCEL_REQUESTED"


def cancel_requested(data_dir: str | Path, run_id: str) -> bool:
    return cancel_marker(data_dir, run_id).exists()


def _explain(e: Exception) -> str:
    import torch
    text = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    if isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower():
        return ("Out of memory: " + text + ". Lower batch_size or seq_len (or the thought length), "
                "or use a GPU with more memory.")
    if "CUDA" in str(e):
        return "CUDA error: " + text + ". See the job log for the full traceback."
    return text + " (an unexpected error: the full traceback is in the job log)"


if __name__ == "__main__":
    sys.exit(main())
