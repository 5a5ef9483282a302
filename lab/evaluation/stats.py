"""Statistics for scores and paired comparisons (no scipy needed).

- `stderr(x)`: standard error of a mean, sample standard deviation (ddof = 1) / sqrt(n);
  for 0/1 scores that is sqrt(p(1 - p) / (n - 1)). NaN when n < 2.
- `ratio_stderr(sums, counts)`: standard error of a token-weighted mean sum(x)/sum(n)
  over documents (delta-method ratio estimator).
- `paired_bootstrap(a, b)`: percentile CI of mean(b - a) from resampling items with
  replacement (the same items for both models), seeded.
- `mcnemar(a, b)`: two-sided McNemar test on the discordant pairs of 0/1 outcomes, exact
  (binomial) and with the continuity-corrected chi-square.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _arr(x: Sequence[float]) -> np.ndarray:
    return np.asarray(list(x) if not isinstance(x, np.ndarray) else x, dtype=np.float64)


def mean(x: Sequence[float]) -> float:
    a = _arr(x)
    return float(a.mean()) if a.size else float("nan")


def stderr(x: Sequence[float]) -> float:
    a = _arr(x)
    if a.size < 2:
        return float("nan")
    return float(a.std(ddof=1) / math.sqrt(a.size))


def ratio_stderr(sums: Sequence[float], counts: Sequence[float]) -> float:
    """Standard error of R = sum(sums) / sum(counts), items as the sampling unit."""
    s, c = _arr(sums), _arr(counts)
    n = s.size
    if n < 2 or c.sum() <= 0:
        return float("nan")
    r = s.sum() / c.sum()
    resid = s - r * c
    cbar = c.mean()
    return float(math.sqrt((resid ** 2).sum() / (n - 1) / n) / cbar)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, n_boot: int = 10_000,
                     seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(b) - mean(a) over paired items."""
    x, y = _arr(a), _arr(b)
    if x.shape != y.shape:
        raise ValueError("paired samples must have the same length")
    n = x.size
    if n == 0:
        return float("nan"), float("nan")
    d = y - x
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, 2_000_000 // max(n, 1))
    for i in range(0, n_boot, chunk):
        k = min(chunk, n_boot - i)
        idx = rng.integers(0, n, size=(k, n))
        out[i:i + k] = d[idx].mean(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(out, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def discordant(a: Sequence[float], b: Sequence[float]) -> tuple[int, int]:
    """(right->wrong, wrong->right) counts going from a to b, on 0/1 outcomes."""
    x, y = _arr(a) > 0.5, _arr(b) > 0.5
    return int((x & ~y).sum()), int((~x & y).sum())


def mcnemar_exact(n10: int, n01: int) -> float:
    """Two-sided exact McNemar p-value: 2 * P(X <= min) with X ~ Binomial(n10 + n01, 1/2)."""
    n = n10 + n01
    if n == 0:
        return 1.0
    k = min(n10, n01)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2.0 * tail)


def mcnemar_chi2(n10: int, n01: int) -> float:
    """Two-sided McNemar p-value with continuity correction: chi2 = (|b - c| - 1)^2 / (b + c)."""
    n = n10 + n01
    if n == 0:
        return 1.0
    chi2 = max(abs(n10 - n01) - 1, 0) ** 2 / n
    return math.erfc(math.sqrt(chi2 / 2.0))   # survival function of chi-square with 1 df


def mcnemar(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    n10, n01 = discordant(a, b)
    return {"right_to_wrong": n10, "wrong_to_right": n01,
            "p_exact": mcnemar_exact(n10, n01), "p_continuity": mcnemar_chi2(n10, n01)}


def is_binary(x: Sequence[float]) -> bool:
    a = _arr(x)
    return bool(np.all((a == 0) | (a == 1)))


def paired_summary(a: Sequence[float], b: Sequence[float], *, seed: int = 0,
                   n_boot: int = 10_000, level: float = 0.95) -> dict:
    """Everything `compare` reports on two aligned outcome vectors (b minus a)."""
    x, y = _arr(a), _arr(b)
    d = y - x
    lo, hi = paired_bootstrap(x, y, n_boot=n_boot, seed=seed, level=level)
    out = {"n": int(x.size), "score_a": mean(x), "score_b": mean(y), "delta": mean(d),
           "stderr": stderr(d), "ci_low": lo, "ci_high": hi, "ci_level": level,
           "n_boot": n_boot, "seed": seed}
    if x.size and is_binary(x) and is_binary(y):
        out.update(mcnemar(x, y))
    else:
        out.update({"right_to_wrong": None, "wrong_to_right": None, "p_exact": None,
                    "p_continuity": None})
    return out
