"""The Slurm executor: a queued run (RunConfig.executor = "slurm") goes to Slurm with `sbatch`
instead of to a local supervisor. The batch job runs the same worker, through the same
`accelerate launch` flags, on the same data folder (which the cluster's nodes must share: see
README "Scaling out"); Slurm's queue replaces the lab's. `scancel` cancels it; `reap` marks it
failed when Slurm no longer knows it but the worker never reported an end.
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from jobs.topology import LAUNCHER, accelerate_args
from lab.errors import LabError
from lab.store import ACTIVE, Store, now

ROOT = Path(__file__).resolve().parent.parent


def require_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise LabError("executor 'slurm' needs Slurm's `sbatch` on this machine's PATH (it was not "
                       "found); use executor 'local', or launch from a cluster login node.")


def batch_script(run: dict, cfg: dict, data_dir: str | Path) -> str:
    """The sbatch script of one run on one node: its processes, GPUs and CPU threads, its log
    appended to the run's job.log."""
    from jobs.multinode import machine_topology
    from lab.config import RunConfig
    topo = machine_topology(RunConfig.from_dict(cfg), machines=1)
    data = Path(data_dir).resolve()
    lines = ["#!/bin/bash", f"#SBATCH --job-name=thoughtlab-{run['id']}", "#SBATCH --nodes=1",
             "#SBATCH --ntasks=1", f"#SBATCH --cpus-per-task={topo.processes * topo.threads}",
             f"#SBATCH --output={data}/runs/{run['id']}/job.log", "#SBATCH --open-mode=append"]
    if topo.gpus:
        lines.append(f"#SBATCH --gpus={topo.gpus}")
    launch = [sys.executable, *LAUNCHER, *accelerate_args(cfg, topo)] if run.get("kind") == "train" \
        else [sys.executable]
    cmd = launch + ["-m", "jobs.worker", run["id"], "--data-dir", str(data)]
    lines += ["set -euo pipefail", f"cd {shlex.quote(str(ROOT))}",
              f"export PYTHONPATH={shlex.quote(str(ROOT))} PYTHONUNBUFFERED=1 OMP_NUM_THREADS={topo.threads}",
              "exec " + shlex.join(cmd)]
    return "\n".join(lines) + "\n"


def submit_to_slurm(store: Store, run_id: str) -> str:
    """Write the run's batch script and `sbatch` it. Returns Slurm's job id."""
    require_sbatch()
    run = store.require_run(run_id)
    folder = store.data_dir / "runs" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "job.sbatch"
    script.write_text(batch_script(run, json.loads(run["config"] or "{}"), store.data_dir), encoding="utf-8")
    out = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        store.set_status_if(run_id, ACTIVE, status="failed", finished_at=now(),
                            error=f"sbatch refused the job: {out.stderr.strip()[:500]}")
        raise LabError(f"sbatch refused the job: {out.stderr.strip()[:500]}")
    job = out.stdout.strip().split(";")[0]
    store.update_run(run_id, slurm_job=job, log_path=str(folder / "job.log"),
                     phase=f"in Slurm's queue (job {job})", heartbeat_at=now())
    return job


def slurm_states(job_ids: list[str]) -> dict[str, str] | None:
    """Slurm's state of each job it still knows (PENDING, RUNNING, ...); None when Slurm
    cannot be asked (no squeue, controller down)."""
    if shutil.which("squeue") is None:
        return None
    if not job_ids:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    states = dict(line.split(None, 1) for line in out.stdout.splitlines() if " " in line)
    return {k: v.strip() for k, v in states.items()}


def cancel_slurm(job: str) -> None:
    if shutil.which("scancel"):
        subprocess.run(["scancel", job], capture_output=True, timeout=30)


def reap_slurm(store: Store, runs: list[dict]) -> list[str]:
    """Active Slurm runs that Slurm no longer knows and whose worker never reported an end:
    marked failed. Returns their ids."""
    jobs = {r["slurm_job"]: r for r in runs if isinstance(r.get("slurm_job"), str) and r["slurm_job"]}
    known = slurm_states(list(jobs)) if jobs else None
    if known is None:
        return []
    dead = []
    for job, run in jobs.items():
        if job not in known and store.set_status_if(
                run["id"], ACTIVE, status="failed", finished_at=now(),
                error=f"Slurm job {job} ended without the worker reporting a result (see the job log)."):
            dead.append(run["id"])
    return dead
