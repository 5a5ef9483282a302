"""One progress figure and ETA for a whole experiment, weighted by each job's estimated cost.

A job's weight is its estimated duration in seconds:
- a job of a kind that has already run (same arm for training, same arm and thought mode for
  evaluations) costs what those took on average;
- a running job costs its elapsed time divided by its progress (once past 5 %);
- otherwise the mean of any finished job of the same kind (train / eval), else a prior
  (PRIOR_S), so early estimates are rough and sharpen as jobs finish.
Done fraction = sum(weight x progress) / sum(weight); ETA = remaining weighted seconds divided
by the jobs that run at once. A job's progress: training in a FLOP budget by FLOPs spent,
otherwise by steps; evaluations by their reported percentage; ended jobs count as done.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from lab import queries
from lab.experiments.driver import driver_alive, read_state
from lab.store import ACTIVE, Store, now

PRIOR_S = {"train": 120.0, "eval": 60.0}
MIN_FRACTION = 0.05


@dataclass
class ExperimentProgress:
    state: str                  # planning | failed | running | ended
    fraction: float             # 0..1, weighted by estimated cost
    eta_s: float | None         # seconds left (None when unknown)
    jobs: int
    finished: int
    failed: int                 # failed or cancelled
    running: int
    error: str = ""
    stalled: bool = False       # the driver died with jobs it never started

    def message(self) -> str:
        if self.state == "planning":
            return "checking the spec and creating the jobs"
        if self.state == "failed":
            return f"failed before any job ran: {self.error}"
        text = f"{self.finished}/{self.jobs} jobs finished, {self.running} running"
        if self.failed:
            text += f", {self.failed} failed or cancelled"
        if self.stalled:
            text += " — the experiment's driver stopped: `python -m lab experiment resume ID`"
        return text


def job_fractions(jobs: pd.DataFrame, flops: dict[str, float]) -> list[float]:
    """Progress in [0, 1] of each job (ended jobs: 1)."""
    out = []
    for r in jobs.to_dict("records"):
        if r["status"] not in ACTIVE:
            out.append(1.0)
        elif r["status"] == "queued":
            out.append(0.0)
        elif r["kind"] == "train" and r["max_flops"]:
            out.append(min(1.0, flops.get(r["id"], 0.0) / r["max_flops"]))
        else:
            total = r["max_steps"] or 100
            out.append(min(1.0, float(r["step"] or 0) / total))
    return out


def estimate(jobs: pd.DataFrame, fractions: list[float], at: pd.Timestamp,
             parallel: int = 1) -> tuple[float, float | None]:
    """(done fraction, ETA in seconds) from the jobs (columns kind, category, status,
    started_at, finished_at) and their progress."""
    if jobs.empty:
        return 0.0, None
    durations = {}
    finished = jobs[jobs["status"] == "finished"]
    for r in finished.to_dict("records"):
        d = (r["finished_at"] - r["started_at"]).total_seconds() if pd.notna(r["started_at"]) else None
        if d is not None and d >= 0:
            durations.setdefault(("cat", r["category"]), []).append(d)
            durations.setdefault(("kind", r["kind"]), []).append(d)
    weights = []
    for r, frac in zip(jobs.to_dict("records"), fractions):
        if r["status"] == "running" and frac >= MIN_FRACTION and pd.notna(r["started_at"]):
            w = (at - r["started_at"]).total_seconds() / frac
        else:
            known = durations.get(("cat", r["category"])) or durations.get(("kind", r["kind"]))
            w = sum(known) / len(known) if known else PRIOR_S.get(r["kind"], 60.0)
        weights.append(max(w, 1.0))
    total = sum(weights)
    done = sum(w * f for w, f in zip(weights, fractions))
    active = [(w, f) for w, f, s in zip(weights, fractions, jobs["status"]) if s in ACTIVE]
    eta = sum(w * (1 - f) for w, f in active) / max(parallel, 1) if active else 0.0
    return done / total, eta


def experiment_progress(store: Store, experiment_id: str, parallel: int | None = None) -> ExperimentProgress:
    """Where an experiment stands (see the module docstring)."""
    from lab.experiments.driver import unstarted
    state = read_state(store.data_dir, experiment_id)
    jobs = queries.experiment_jobs(store, experiment_id)[
        ["id", "kind", "status", "step", "max_steps", "started_at", "finished_at", "config"]]
    if jobs.empty or state.get("state") == "failed":
        st = state.get("state", "planning")
        return ExperimentProgress("failed" if st == "failed" else "planning", 0.0, None, len(jobs), 0, 0, 0,
                                  error=state.get("error") or "")
    cfgs = [json.loads(c or "{}") for c in jobs.pop("config")]
    jobs["max_flops"] = [float(c.get("max_flops") or 0.0) for c in cfgs]
    jobs["category"] = [_category(c) for c in cfgs]
    running = jobs[(jobs["status"] == "running") & (jobs["kind"] == "train")]["id"].tolist()
    fl = queries.max_flops(store, running)
    fractions = job_fractions(jobs, fl)
    frac, eta = estimate(jobs, fractions, pd.Timestamp(now()), parallel or _parallel())
    active = jobs["status"].isin(ACTIVE)
    stalled = bool(active.any() and not driver_alive(store.data_dir, experiment_id)
                   and not unstarted(store, experiment_id).empty)
    return ExperimentProgress("running" if active.any() else "ended", frac, eta, len(jobs),
                              int((jobs["status"] == "finished").sum()),
                              int(jobs["status"].isin(["failed", "cancelled"]).sum()),
                              int((jobs["status"] == "running").sum()), stalled=stalled)


def _category(cfg: dict) -> str:
    if "specs" in cfg:
        first = cfg["specs"][0]
        extra = first.get("extra") or {}
        return f"eval:{extra.get('arm', '')}:{first.get('thought_mode', 'none')}:{bool(extra.get('steps_of'))}"
    if cfg.get("objective") == "eval":
        return f"eval:{cfg.get('benchmark', '')}"
    return f"train:{cfg.get('arm') or cfg.get('objective', '')}"


def _parallel() -> int:
    from jobs.manager import gpu_count
    from jobs.supervisor import cpu_slots
    return max(cpu_slots(), gpu_count())
