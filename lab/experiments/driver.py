"""Launching an experiment and driving its jobs.

`launch(spec)` returns at once: it checks the spec structurally, stores it as
`<data>/experiments/<id>.yaml` with a state file `<id>.json`, and starts the experiment's
driver, a detached process (`python -m lab.experiments ID`). The driver does the slow
checks (model, corpus, FLOP budget), records every job as queued, then starts each job's
supervisor once the jobs it waits for have ended, a few at a time. So a 150-job experiment
never has 150 processes waiting, and the queue runs in plan order: the pretraining, the
base's evaluation, then seed by seed the arms and their evaluations.

The state file says where the experiment stands: `planning` (the driver is checking),
`failed` (with the reason; no job was created), `submitted` (the jobs exist; `jobs` maps plan
keys to run ids). If the driver dies, `resume(id)` starts a new one: it only starts jobs that
are still queued and were never started.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lab import queries
from lab.errors import LabError
from lab.experiments.plan import ExperimentPlan, make_plan, materialise
from lab.experiments.spec import ExperimentSpec, load_spec
from lab.store import ACTIVE, Store, new_run_id, now

POLL_S = 1.0


# ---- the experiment's files ----------------------------------------------------------------------
def experiments_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "experiments"


def spec_path(data_dir: str | Path, exp_id: str) -> Path:
    return experiments_dir(data_dir) / f"{exp_id}.yaml"


def read_state(data_dir: str | Path, exp_id: str) -> dict[str, Any]:
    """The state file (empty dict for experiments launched before spec files existed)."""
    p = experiments_dir(data_dir) / f"{exp_id}.json"
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def write_state(data_dir: str | Path, exp_id: str, **fields: Any) -> dict[str, Any]:
    """Update the state file atomically (write a temporary file, then rename)."""
    state = {**read_state(data_dir, exp_id), **fields}
    p = experiments_dir(data_dir) / f"{exp_id}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, p)
    return state


def stored_spec(data_dir: str | Path, exp_id: str) -> ExperimentSpec | None:
    p = spec_path(data_dir, exp_id)
    return load_spec(p) if p.exists() else None


# ---- launching ---------------------------------------------------------------------------------
def launch(spec: ExperimentSpec, data_dir: str | Path = "data", *, command: str = "") -> str:
    """Check the spec (fast checks only), store it and start the driver. Returns the
    experiment id at once; the jobs appear as the driver creates them."""
    spec.validate(data_dir)
    exp_id = "exp-" + new_run_id()
    path = spec_path(data_dir, exp_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec.to_yaml(), encoding="utf-8")
    write_state(data_dir, exp_id, id=exp_id, state="planning", created_at=str(now()),
                command=command or f"python -m lab experiment run {path}", jobs={})
    start_driver(exp_id, data_dir)
    return exp_id


def start_driver(exp_id: str, data_dir: str | Path) -> int:
    from jobs.manager import ROOT, _child_env
    log = experiments_dir(data_dir) / f"{exp_id}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lab.experiments", exp_id,
                                 "--data-dir", str(data_dir)], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=_child_env())
    threading.Thread(target=proc.wait, daemon=True).start()     # never a zombie of ours
    write_state(data_dir, exp_id, driver_pid=proc.pid)
    return proc.pid


def driver_alive(data_dir: str | Path, exp_id: str) -> bool:
    """True while this experiment's driver process runs."""
    pid = read_state(data_dir, exp_id).get("driver_pid")
    if not pid:
        return False
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
        with open(f"/proc/{int(pid)}/stat") as f:
            zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
    return not zombie and exp_id.encode() in cmd


def resume(exp_id: str, data_dir: str | Path = "data") -> bool:
    """Start a new driver when the last one died with jobs still to start. False when there
    is nothing to do (a driver runs, or every job was started)."""
    state = read_state(data_dir, exp_id)
    if not state:
        raise LabError(f"No experiment {exp_id!r} with a spec in {experiments_dir(data_dir)}.")
    if driver_alive(data_dir, exp_id) or (state.get("state") == "submitted" and unstarted(Store(data_dir), exp_id).empty):
        return False
    if state.get("state") == "failed":
        write_state(data_dir, exp_id, state="planning", error=None)
    start_driver(exp_id, data_dir)
    return True


def cancel(exp_id: str, data_dir: str | Path = "data") -> int:
    """Stop the driver and cancel every queued or running job. Returns how many jobs."""
    from jobs.manager import cancel as cancel_job
    if driver_alive(data_dir, exp_id):
        try:
            os.killpg(int(read_state(data_dir, exp_id)["driver_pid"]), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        end = time.monotonic() + 15        # it may be creating a job: let it stop first
        while driver_alive(data_dir, exp_id) and time.monotonic() < end:
            time.sleep(0.2)
    store = Store(data_dir)
    active = queries.active_job_ids(store, exp_id)
    for rid in active:
        cancel_job(rid, data_dir)
    if read_state(data_dir, exp_id).get("state") in ("planning", "creating jobs"):
        write_state(data_dir, exp_id, state="failed", error="cancelled before its jobs were created")
    return len(active)


# ---- the driver ------------------------------------------------------------------------------------
def submit_plan(plan: ExperimentPlan, data_dir: str | Path, start: bool = False) -> dict[str, str]:
    """Record every job of the plan as queued (started now only with start=True); returns
    plan key -> run id."""
    from jobs.manager import submit, submit_evals
    ids: dict[str, str] = {}
    for job in plan.jobs:
        job = materialise(job, ids)
        if job.kind == "train":
            ids[job.key] = submit(job.config, data_dir, start=start)
        else:
            ids[job.key] = submit_evals(job.specs, data_dir, after=job.after, experiment=plan.id,
                                        name=job.name, start=start)
    return ids


def unstarted(store: Store, exp_id: str):
    """The experiment's queued jobs whose supervisor was never started, in plan order."""
    return queries.unstarted_jobs(store, exp_id)


def drive(exp_id: str, data_dir: str | Path) -> int:
    """The driver's work (see the module docstring). Returns a process exit code."""
    from jobs.manager import reap
    store = Store(data_dir)
    state = read_state(data_dir, exp_id)
    if state.get("state") != "submitted":
        for rid in unstarted(store, exp_id)["id"]:     # left by a driver that died while creating
            store.set_status_if(rid, ["queued"], status="cancelled", finished_at=now(),
                                error="superseded: the experiment's setup was started again")
        try:
            spec = load_spec(spec_path(data_dir, exp_id))
            plan = make_plan(spec, exp_id, data_dir)
            write_state(data_dir, exp_id, state="creating jobs", budget_flops=plan.budget_flops)
            ids = submit_plan(plan, data_dir)
        except LabError as e:
            for rid in unstarted(store, exp_id)["id"]:        # jobs created before the failure
                store.set_status_if(rid, ["queued"], status="cancelled", finished_at=now(),
                                    error=f"the experiment could not be set up: {e}")
            write_state(data_dir, exp_id, state="failed", error=str(e), finished_at=str(now()))
            print(f"[driver] {exp_id} failed: {e}", flush=True)
            return 1
        write_state(data_dir, exp_id, state="submitted", jobs=ids)
        print(f"[driver] {exp_id}: {len(ids)} jobs queued", flush=True)
    cap = _concurrency()
    while True:
        reap(data_dir)
        waiting = unstarted(store, exp_id)
        if waiting.empty:
            break
        runs = queries.experiment_jobs(store, exp_id)[["id", "status", "pid"]]
        status = dict(zip(runs["id"], runs["status"]))
        started = int(((runs["status"] == "running") | ((runs["status"] == "queued") & runs["pid"].notna())).sum())
        for r in waiting.to_dict("records"):
            if started >= cap:
                break
            if _start_if_ready(store, r, status):
                started += 1
        time.sleep(POLL_S)
    print(f"[driver] {exp_id}: every job started", flush=True)
    return 0


def _start_if_ready(store: Store, run: dict, status: dict[str, str]) -> bool:
    """Start a job once the runs it waits for have ended; a job that can no longer run (its
    checkpoint's run did not finish) is cancelled with the reason. True when started.
    `status`: the experiment's runs' statuses (others are read one by one)."""
    from jobs.manager import continues_from, start_supervisor
    from jobs.supervisor import wait_for_dependencies
    from lab.config import RunConfig
    cfg = json.loads(run["config"] or "{}")
    after = cfg.get("after") or []
    states = {r: status.get(r) or (store.get_run(r) or {}).get("status", "deleted") for r in after}
    if any(s in ACTIVE for s in states.values()):
        return False
    if run["kind"] == "train":
        source = continues_from(RunConfig.from_dict(cfg))
        if source and states.get(source) != "finished":
            store.set_status_if(run["id"], ["queued"], status="cancelled", finished_at=now(),
                                error=f"run {source}, whose checkpoint this run continues from "
                                      f"(the experiment's pretraining), ended as {states.get(source)}")
            return False
    elif not wait_for_dependencies(store, run["id"], after):   # returns at once: all ended
        return False
    start_supervisor(store, run["id"])
    return True


def _concurrency() -> int:
    """Jobs started at once: the device slots plus one waiting, so a slot never idles long."""
    from jobs.manager import gpu_count
    from jobs.supervisor import cpu_slots
    return max(cpu_slots(), gpu_count()) + 1


# ---- in this process (tests, notebooks) ---------------------------------------------------------
def run_inline(plan: ExperimentPlan, store: Store) -> str:
    """Run a plan in this process, one job after the other, with no background processes.
    The rows look like a launched experiment's. Returns the experiment id."""
    from jobs.manager import eval_job_config
    from lab.evaluation.runner import run_eval_job
    from lab.train import train
    path = spec_path(store.data_dir, plan.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plan.spec.to_yaml(), encoding="utf-8")
    ids: dict[str, str] = {}
    for job in plan.jobs:
        job = materialise(job, ids)
        if job.kind == "train":
            rid = store.create_run(config=job.config.to_dict(), status="running")
            train(job.config, rid, store)
        else:
            config = {**eval_job_config(job.specs[0], plan.id, job.name),
                      "specs": [s.to_dict() for s in job.specs], "after": job.after}
            rid = store.create_run(kind="eval", status="running", config=config)
            run_eval_job(store, rid, job.specs)
        store.update_run(rid, status="finished", finished_at=now(), **({"step": 100} if job.kind == "eval" else {}))
        ids[job.key] = rid
    write_state(store.data_dir, plan.id, id=plan.id, state="submitted", jobs=ids,
                budget_flops=plan.budget_flops, created_at=str(now()), command="(run inline)")
    return plan.id


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="drive an experiment's jobs (started by launch)")
    ap.add_argument("exp_id")
    ap.add_argument("--data-dir", default="data")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return drive(args.exp_id, args.data_dir)

