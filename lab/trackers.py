"""Tracker export (`report_to`): a run's metrics also go to TensorBoard, Weights & Biases or
MLflow through accelerate's tracker API, next to DuckDB (which always gets them). Off by
default; files of file-based trackers live in the run's folder (data/runs/<id>/trackers)."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}   # name -> package


def problems(report_to: list[str]) -> list[str]:
    """What stops these trackers from working here: an unknown name or a missing package."""
    out = []
    for name in report_to:
        if name not in TRACKERS:
            out.append(f"report_to: unknown tracker {name!r}; choose from {', '.join(TRACKERS)}")
        elif importlib.util.find_spec(TRACKERS[name]) is None:
            out.append(f"report_to: {name} is not installed here (pip install {TRACKERS[name]})")
    return out


def folder(data_dir: str | Path, run_id: str) -> Path:
    from lab.checkpoint import run_dir   # torch: loaded on use (the pages validate settings)
    return run_dir(data_dir, run_id) / "trackers"


def start(acc, run_id: str, config: dict[str, Any]) -> None:
    """Open the run in every tracker (rank 0 only: accelerate logs from the main process)."""
    if acc.log_with:
        flat = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()}
        acc.init_trackers(run_id, config=flat)


def log(acc, step: int, metrics: dict[str, Any]) -> None:
    """One step's finite numeric metrics (a missing value is left out, not sent as NaN)."""
    if acc.log_with:
        values = {k: float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        acc.log(values, step=step)


def end(acc) -> None:
    if acc.log_with:
        acc.end_training()
