"""Progress with an ETA for long operations, shown as a bar in the CLI or through a callback
(the web UI passes one that drives st.progress)."""
from __future__ import annotations

import sys
import time
from typing import Callable

Callback = Callable[[float, str], None]   # (fraction 0..1, message with ETA)


class Progress:
    def __init__(self, what: str, total: int, callback: Callback | None = None,
                 stream=None) -> None:
        self.what, self.total, self.callback = what, max(int(total), 1), callback
        self.stream = stream if stream is not None else (None if callback else sys.stderr)
        self.start = time.monotonic()
        self.n = 0

    def eta_text(self, n: int) -> str:
        elapsed = time.monotonic() - self.start
        if n <= 0:
            return f"{elapsed:.0f}s elapsed"
        remaining = elapsed / n * (self.total - n)
        return f"{elapsed:.0f}s elapsed, ETA {remaining:.0f}s"

    def update(self, n: int, note: str = "") -> None:
        self.n = min(n, self.total)
        frac = self.n / self.total
        msg = f"{self.what}: {self.n}/{self.total} ({self.eta_text(self.n)})" + (f" {note}" if note else "")
        if self.callback:
            self.callback(frac, msg)
        if self.stream is not None and getattr(self.stream, "isatty", lambda: False)():
            bar = "#" * int(frac * 30)
            self.stream.write(f"\r[{bar:<30}] {msg[:100]:<100}")
            self.stream.flush()
        elif self.stream is not None and note:
            self.stream.write(msg + "\n")

    def advance(self, k: int = 1, note: str = "") -> None:
        self.update(self.n + k, note)

    def done(self) -> None:
        self.update(self.total)
        if self.stream is not None and getattr(self.stream, "isatty", lambda: False)():
            self.stream.write("\n")


# ---- progress inside one training step --------------------------------------------------------
# A Quiet-STaR or RL step can take minutes on a CPU. Objectives say where it stands
# (`step_note("thought pass 3/6")`, `step_note("rollout: 40/64 tokens")`); the training loop
# installs a receiver that writes the run's phase and the log (throttled). Outside a training
# step (evaluation, the Playground) there is no receiver and a note costs a short string.
_step_receiver: Callable[[str], None] | None = None
NOTE_EVERY_S = 5.0            # a step shorter than this writes no note


def step_note(text: str) -> None:
    """Report progress inside the current training step; a no-op when nobody listens."""
    if _step_receiver is not None:
        _step_receiver(text)


class StepNotes:
    """The training loop's receiver: `with StepNotes(write, max_steps) as notes:`, and
    `notes.start_step(n)` before each step.
    `write(text)` gets 'step n/N: <note>' at most every `every_s` seconds, so only long steps
    write any; `wrote` says whether the current step did (the loop then restores the phase)."""

    def __init__(self, write: Callable[[str], None], max_steps: int, every_s: float | None = None) -> None:
        self.write, self.max_steps = write, max_steps
        self.every_s = NOTE_EVERY_S if every_s is None else every_s
        self.step, self.wrote = 0, False
        self._last = time.monotonic()

    def start_step(self, step: int) -> None:
        self.step, self.wrote, self._last = step, False, time.monotonic()

    def __call__(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:      # only steps long enough to need it
            self._last, self.wrote = now, True
            self.write(f"step {self.step}/{self.max_steps}: {text}")

    def __enter__(self) -> "StepNotes":
        global _step_receiver
        self._previous, _step_receiver = _step_receiver, self
        return self

    def __exit__(self, *exc) -> None:
        global _step_receiver
        _step_receiver = self._previous
