"""`make demo` / `python -m lab demo`: a data folder holding one finished example experiment
(the `demo-cpu` preset), made once and reused, so the lab never opens on an empty page."""
from __future__ import annotations

import os
from pathlib import Path

from lab.errors import LabError

PRESET = "demo-cpu"
# The demo's jobs are tiny (tiny-random, a few steps): each is mostly process start-up, which
# is single-threaded, so two at once on a 2-core machine halve the wait (3.0 -> 1.7 min,
# measured with `time python -m lab demo`). THOUGHTLAB_CPU_JOBS set by the user wins.
DEMO_CPU_JOBS = "2"


def finished_demo(data_dir: str | Path) -> str | None:
    """The newest experiment of the folder whose jobs all finished, or None."""
    from lab.experiments import experiment_progress, experiments
    from lab.store import Store
    store = Store(data_dir)
    for exp in experiments(store)["id"]:
        p = experiment_progress(store, exp)
        if p.state == "ended" and p.jobs and p.finished == p.jobs:
            return str(exp)
    return None


def ensure_demo(data_dir: str | Path) -> str:
    """The id of a finished demo experiment in `data_dir`, running the preset first (with a
    progress bar) when there is none. Raises LabError when the run fails."""
    found = finished_demo(data_dir)
    if found:
        print(f"demo: experiment {found} is already there", flush=True)
        return found
    from lab.experiments import launch, load_preset
    from lab.experiments.cli import follow
    os.environ.setdefault("THOUGHTLAB_CPU_JOBS", DEMO_CPU_JOBS)     # inherited by its jobs
    exp = launch(load_preset(PRESET), data_dir, command=f"python -m lab demo --data-dir {data_dir}")
    print(f"demo: running experiment {exp} (preset {PRESET}); it is kept for the next `make demo`", flush=True)
    if follow(exp, str(data_dir)) != 0:
        raise LabError(f"The demo experiment {exp} did not finish: `python -m lab experiment status {exp} "
                       f"--data-dir {data_dir}` says why.")
    return exp
