"""The job queue's order: first in, first out across training and evaluation jobs, with the
runs a job waits for (`after`) respected.

Every queued job has a supervisor (jobs/supervisor.py) polling for a device slot. Polling
alone starts whichever supervisor happens to poll first when a slot frees, so a job queued
later could start before an earlier one (an evaluation queued at 01:17 started at 01:46,
after experiment jobs submitted later). Now a supervisor takes a slot only when no job queued
before it (`runs.queued_at`: its submit or resume) is waiting for a slot of the same kind.
A job still waiting for other runs to end is not in line yet and blocks nobody.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from lab import queries
from lab.store import ACTIVE, Store

EXTERNAL_PHASE = "launched outside the lab's queue: waiting for its machines to start"

SLOT_WAIT = "waiting for a {kind} slot"      # a supervisor's phase while it waits in line


def slot_phase(kind: str) -> str:
    """The phase a supervisor shows while it waits for a slot of `kind` ("cpu" or "gpu")."""
    return SLOT_WAIT.format(kind=kind.upper())


@dataclass
class QueuePlace:
    position: int | None                   # 1 = starts next; None while it waits for other runs
    waits_for: list[str] = field(default_factory=list)   # runs (`after`) that have not ended
    note: str = ""                         # why it has no position otherwise

    @property
    def text(self) -> str:
        if self.note:
            return self.note
        if self.waits_for:
            return "waits for " + ", ".join(self.waits_for)
        return f"#{self.position} in queue"


def queue_positions(store: Store) -> dict[str, QueuePlace]:
    """Each queued job's place: its position among the queued jobs that can start (1 = next),
    or the runs it still waits for. Used by `lab runs` and the Runs page."""
    queued = queries.queued_in_order(store)
    if queued.empty:
        return {}
    status = queries.run_statuses(store)
    places, position = {}, 0
    for r in queued.to_dict("records"):
        if isinstance(r["slurm_job"], str) and r["slurm_job"]:     # Slurm's queue, not ours
            places[r["id"]] = QueuePlace(None, note=f"in Slurm's queue (job {r['slurm_job']})")
            continue
        if r["phase"] == EXTERNAL_PHASE:        # its machines run it (jobs/multinode.py)
            places[r["id"]] = QueuePlace(None, note="launched outside the lab's queue")
            continue
        after = json.loads(r["config"] or "{}").get("after") or []
        waiting = [a for a in dict.fromkeys(after) if status.get(a) in ACTIVE]
        if waiting:
            places[r["id"]] = QueuePlace(None, waiting)
        else:
            position += 1
            places[r["id"]] = QueuePlace(position)
    return places


def is_next_for_slot(store: Store, run_id: str, kind: str) -> bool:
    """True when no job queued before `run_id` is waiting (with a live supervisor) for a slot
    of the same kind: this job may take one. An earlier supervisor that has not said yet what
    it waits for (phase still empty: it is starting) counts as waiting, so that a supervisor
    which happens to start faster cannot overtake it."""
    from jobs.manager import _alive
    blocking = ("", slot_phase(kind))
    for r in queries.queued_in_order(store).to_dict("records"):
        if r["id"] == run_id:
            return True
        if (r["phase"] or "") in blocking and pd.notna(r["pid"]) and _alive(int(r["pid"])):
            return False
    return True
