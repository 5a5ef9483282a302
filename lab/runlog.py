"""Buffered logging from a training job into the store.

Rows are kept in memory and written in one transaction every `flush_every` seconds (and
before checkpoints and at the end), so a job writes a few short sessions instead of one per
row. A job killed with SIGKILL loses at most the rows since its last flush; a cancelled or
crashing job flushes what it logged before it stops.
"""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from lab.store import Store, now


class RunLogger:
    """`print_every` > 0: also print a line (step, loss, step time) to the job's log every N
    steps (RunConfig.log_every), so the Runs page's log tail moves with each step."""

    def __init__(self, store: Store, run_id: str, flush_every: float = 2.0, enabled: bool = True,
                 print_every: int = 0, max_steps: int = 0):
        self.store, self.run_id, self.flush_every, self.enabled = store, run_id, flush_every, enabled
        self.print_every, self.max_steps = print_every, max_steps
        self.rows: dict[str, list[dict[str, Any]]] = {"metrics": [], "tokens": [], "thoughts": []}
        self.last_flush = time.monotonic()
        self.step = 0

    def metrics(self, step: int, values: dict[str, float], wall_time: float, flops: float) -> None:
        rows = [{"run_id": self.run_id, "step": step, "name": name, "value": float(value),
                 "wall_time": wall_time, "flops": flops}
                for name, value in values.items() if value is not None]
        self.rows["metrics"].extend(rows)
        self.step = step            # last: a step counts as logged once all its rows are in
        if self.enabled and self.print_every and step % self.print_every == 0:
            print(step_line(step, self.max_steps, values), flush=True)

    def records(self, table: str, step: int, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            self.rows[table].append({**r, "run_id": self.run_id, "step": step})

    def maybe_flush(self) -> None:
        if time.monotonic() - self.last_flush >= self.flush_every:
            self.flush()

    def flush(self, **run_update: Any) -> None:
        if not self.enabled:
            return
        update = {"heartbeat_at": now(), "step": self.step, **run_update}
        with _no_sigterm():      # a cancel mid-commit must not leave rows written but buffered
            self.store.append(self.rows, run_update=update, run_id=self.run_id)
            self.rows = {k: [] for k in self.rows}
        self.last_flush = time.monotonic()

    def flush_quietly(self) -> None:
        """Best-effort flush while the job is already failing or being cancelled: the
        original error is the one to report. Records of a step whose metrics were not logged
        (the job stopped inside it) are dropped: a step is logged whole or not at all."""
        for table in self.rows:
            self.rows[table] = [r for r in self.rows[table] if r["step"] <= self.step]
        try:
            self.flush()
        except BaseException:  # noqa: BLE001
            pass


def step_line(step: int, max_steps: int, values: dict[str, float | None]) -> str:
    """"[train] step 3/30 · loss 2.4512 · 1.92 s/step" (the parts that were logged)."""
    parts = [f"[train] step {step}/{max_steps}" if max_steps else f"[train] step {step}"]
    if values.get("loss") is not None:
        parts.append(f"loss {values['loss']:.4f}")
    if values.get("step_time_s") is not None:
        parts.append(f"{values['step_time_s']:.2f} s/step")
    return " · ".join(parts)


@contextmanager
def _no_sigterm() -> Iterator[None]:
    """Hold SIGTERM (the cancel signal) until the block is done, then deliver it. Python runs
    signal handlers in the main thread, so swapping the handler covers a signal that the
    kernel hands to any thread (a per-thread signal mask would not)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if pending:
            if callable(previous):
                previous(signal.SIGTERM, None)
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGTERM)
