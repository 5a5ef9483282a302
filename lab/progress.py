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
