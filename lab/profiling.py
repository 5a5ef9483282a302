"""Phase timers: the documented hook the cost benchmark uses to split a step into phases.

Library code marks its costly parts with `@timed("rl.sample")` or `with phase("backward"):`
and counts what it produced with `count("generated_tokens", n)`. Outside `recording()` these
are no-ops (one global read), so the training loop pays nothing. Inside, each phase's wall
time is summed per name (nested phases are inclusive), after `sync()` so that GPU work is
counted where it was launched.
"""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable)


@dataclass
class Recorder:
    sync: Callable[[], None] = lambda: None
    # time.process_time measures this process's CPU seconds: steadier than wall time on a
    # loaded machine when torch runs one thread.
    clock: Callable[[], float] = time.perf_counter
    times: dict[str, float] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)

    def reset(self) -> None:
        self.times, self.counts = {}, {}


_active: Recorder | None = None


@contextlib.contextmanager
def recording(recorder: Recorder) -> Iterator[Recorder]:
    """Record phases and counts into `recorder` while the block runs."""
    global _active
    previous, _active = _active, recorder
    try:
        yield recorder
    finally:
        _active = previous


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    rec = _active
    if rec is None:
        yield
        return
    rec.sync()
    t0 = rec.clock()
    try:
        yield
    finally:
        rec.sync()
        rec.times[name] = rec.times.get(name, 0.0) + rec.clock() - t0


def timed(name: str) -> Callable[[F], F]:
    """Decorator: the whole call is phase `name`."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            if _active is None:
                return fn(*args, **kwargs)
            with phase(name):
                return fn(*args, **kwargs)
        return inner  # type: ignore[return-value]
    return wrap


def count(name: str, n: float) -> None:
    if _active is not None:
        _active.counts[name] = _active.counts.get(name, 0.0) + float(n)
